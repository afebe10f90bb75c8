"""`handmesh export`: a checkpoint -> the whole reparameterised model as ONNX (or Core ML), checked against PyTorch;
or -> a Hugging Face-style folder (`--format hub`: model.safetensors, config.json, README.md; see `handmesh.hub`).

    handmesh export --checkpoint runs/quickstart/checkpoints/best.ckpt --format onnx --out model.onnx
    handmesh export --checkpoint runs/quickstart/model.ckpt --format hub --out hub/   # then upload hub/ to the Hub

The file takes images (B, 3, S, S) float in [0, 1] RGB and K (B, 3, 3) crop intrinsics (pixels) and returns
vertices (B, 778, 3) and keypoints (B, 21, 3) in metres (camera frame) and the camera (B, 3), any batch size.
Nothing is written unless the exported model matches PyTorch within the tolerance, and an existing --out is replaced
only with --overwrite. The file's metadata names the hand model it holds (MANO or the stand-in), the encoder and the
input size (`handmesh.export.model_metadata`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from handmesh.cli_values import check_can_write
from handmesh.export import FORMATS, METADATA_PREFIX, PARITY_TOLERANCE_M, check_format, export_model
from handmesh.hub import write_hub_folder
from handmesh.inference import Predictor
from handmesh.progress import progress_bar

HUB_FORMAT = "hub"

STAGES = ("load", "fold", "export", "parity")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True,
                        help="a .ckpt written by `handmesh fit` (or a hub folder, an https:// URL, hf://owner/repo)")
    parser.add_argument("--format", default="onnx", help=f"one of {', '.join(FORMATS + (HUB_FORMAT,))} (default: onnx)")
    parser.add_argument("--out", required=True, type=Path,
                        help="where to write the model (.onnx, a .mlpackage folder, or a folder for hub)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out when it exists")
    parser.add_argument("--scores", type=Path, default=None,
                        help="hub: the scores.json for the model card (default: the run's, beside the checkpoint)")
    parser.add_argument("--mano-dir", default=None,
                        help="MANO folder (default: $HANDMESH_MANO_DIR, data/mano, else the stand-in)")
    parser.add_argument("--tolerance", type=float, default=PARITY_TOLERANCE_M,
                        help="largest allowed vertex difference from PyTorch, metres "
                             f"(default: {PARITY_TOLERANCE_M:g})")
    parser.add_argument("--threads", type=int, default=2,
                        help="CPU threads for PyTorch and the parity check (default: 2)")


def run(args: argparse.Namespace) -> int:
    empty_folder = args.format == HUB_FORMAT and args.out.is_dir() and not any(args.out.iterdir())
    if not empty_folder:
        check_can_write(args.out, args.overwrite)
    if args.format == HUB_FORMAT:
        written = write_hub_folder(args.checkpoint, args.out, args.scores)
        print(f"wrote {', '.join(str(path) for path in written)}")
        return 0
    check_format(args.format)
    torch.set_num_threads(max(1, args.threads))
    with progress_bar(total=len(STAGES), desc="export", unit="stage") as bar:
        bar.set_postfix_str("load")
        predictor = Predictor.from_checkpoint(args.checkpoint, mano_dir=args.mano_dir, reparameterize=False)

        def on_stage(name: str) -> None:
            bar.update(1)
            bar.set_postfix_str(name)

        result = export_model(predictor.model, args.out, args.format, tolerance=args.tolerance, on_stage=on_stage)
        bar.update(bar.total - bar.n)
    print(predictor.description)
    if predictor.is_standin:
        print(f"made with the stand-in hand model, not MANO: the file's metadata says so ({METADATA_PREFIX}hand_model)")
    print(f"wrote {result.path} ({result.format}, {result.size_mb:.1f} MiB, {result.seconds:.1f} s)")
    print(result.parity.describe())
    return 0
