"""`handmesh export`: a checkpoint -> the whole reparameterised model as ONNX (or Core ML), checked against PyTorch.

    handmesh export --checkpoint runs/quickstart/checkpoints/best.ckpt --format onnx --out model.onnx

The file takes images (B, 3, S, S) float in [0, 1] RGB and K (B, 3, 3) crop intrinsics (pixels) and returns
vertices (B, 778, 3) and keypoints (B, 21, 3) in metres (camera frame) and the camera (B, 3), any batch size.
Nothing is written unless the exported model matches PyTorch within the tolerance.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from tqdm import tqdm

from handmesh.export import FORMATS, PARITY_TOLERANCE_M, check_format, export_model
from handmesh.inference import Predictor

STAGES = ("load", "fold", "export", "parity")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, type=Path, help="a .ckpt written by `handmesh fit`")
    parser.add_argument("--format", default="onnx", help=f"one of {', '.join(FORMATS)} (default: onnx)")
    parser.add_argument("--out", required=True, type=Path, help="where to write the model (.onnx, or a .mlpackage folder)")
    parser.add_argument("--mano-dir", default=None,
                        help="MANO folder (default: $HANDMESH_MANO_DIR, data/mano, else the stand-in)")
    parser.add_argument("--tolerance", type=float, default=PARITY_TOLERANCE_M,
                        help=f"largest allowed vertex difference from PyTorch, metres (default: {PARITY_TOLERANCE_M:g})")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for PyTorch and the parity check (default: 2)")


def run(args: argparse.Namespace) -> int:
    check_format(args.format)
    torch.set_num_threads(max(1, args.threads))
    with tqdm(total=len(STAGES), desc="export", unit="stage") as bar:
        bar.set_postfix_str("load")
        predictor = Predictor.from_checkpoint(args.checkpoint, mano_dir=args.mano_dir, reparameterize=False)

        def on_stage(name: str) -> None:
            bar.update(1)
            bar.set_postfix_str(name)

        result = export_model(predictor.model, args.out, args.format, tolerance=args.tolerance, on_stage=on_stage)
        bar.update(bar.total - bar.n)
    print(predictor.description)
    print(f"wrote {result.path} ({result.format}, {result.size_mb:.1f} MiB, {result.seconds:.1f} s)")
    print(result.parity.describe())
    return 0
