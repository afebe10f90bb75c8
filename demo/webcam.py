"""Live 3D hand meshes from a webcam, a video, an image folder or an image.

    python demo/webcam.py                                   # webcam 0, window with HUD; keys: q s r m f
    python demo/webcam.py --source clip.mp4 --no-window --out overlay.mp4 --save-meshes meshes/

The same program as `handmesh demo` (options: --help). It imports the installed `handmesh` package
(`pip install -e .` from the repository root); the reusable parts live in `handmesh/demo/`.
"""

import sys

from handmesh.demo.app import main

if __name__ == "__main__":
    sys.exit(main())
