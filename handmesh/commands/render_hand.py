"""`handmesh render-hand`: render a posed hand from any MANO-format model to a PNG, to eyeball it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from handmesh.atomic import atomic_path
from handmesh.errors import HandmeshError

if TYPE_CHECKING:  # numpy, torch and the renderer load when used, so `--help` stays fast
    import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mano-dir", help="folder with MANO_RIGHT.pkl (default: data/mano, else the stand-in)")
    parser.add_argument("--pose", default="flat",
                        help="flat (default), fist, pinch, point, or random (drawn with --seed)")
    parser.add_argument("--side", choices=("right", "left"), default="right")
    parser.add_argument("--size", type=int, default=512, help="image width and height in pixels (default: 512)")
    parser.add_argument("--seed", type=int, default=0, help="seed for --pose random")
    parser.add_argument("--out", type=Path, default=Path("hand.png"), help="PNG to write (default: hand.png)")


def render_hand(mano_dir: Path, pose: str, side: str, size: int, seed: int = 0) -> np.ndarray:
    """(size, size, 3) uint8 RGB picture of the posed hand, palm toward the camera, on a light background."""
    import numpy as np
    import torch

    from handmesh.mano import ManoLayer
    from handmesh.poses import named_pose, viewing_placement
    from handmesh.render import MeshRenderer

    layer = ManoLayer.from_dir(mano_dir, side=side)
    with torch.no_grad():
        vertices = layer(named_pose(layer, pose, seed)).vertices[0].double().numpy()
    focal = 2.0 * size
    K = np.array([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1]])
    renderer = MeshRenderer(size, size)
    try:
        rendering = renderer.render([(viewing_placement(layer, vertices, focal, size), layer.faces.numpy())], K)
    finally:
        renderer.close()
    image = np.full((size, size, 3), 235, np.uint8)
    image[rendering.mask] = rendering.color[rendering.mask]
    return image


def run(args: argparse.Namespace) -> int:
    import cv2

    from handmesh.poses import POSE_NAMES
    from handmesh.standin import ensure_standin

    if args.pose not in POSE_NAMES:
        raise HandmeshError(f"--pose {args.pose!r}: expected one of {', '.join(POSE_NAMES)}.")
    source = ensure_standin(args.mano_dir, command="handmesh render-hand")
    print(source.describe())
    image = render_hand(source.directory, args.pose, args.side, args.size, args.seed)
    label = f"{args.side} hand, {args.pose}" + (" - STAND-IN model, not MANO" if source.is_standin else "")
    cv2.putText(image, label, (10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (40, 40, 40), 1, cv2.LINE_AA)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as temporary:
        cv2.imwrite(str(temporary), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    print(f"wrote {args.out}")
    return 0
