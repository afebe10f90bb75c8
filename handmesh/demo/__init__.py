"""The live demo's reusable parts: sources, hand finding, crops, smoothing, drawing, the threaded pipeline, the app.

`python demo/webcam.py` and `handmesh demo` both run `handmesh.demo.app`.
"""
