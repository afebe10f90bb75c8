"""`handmesh predict`: the evaluation split's predictions as an official FreiHAND `pred.json` (camera frame, metres).

    handmesh predict --checkpoint runs/quickstart/checkpoints/best.ckpt --data-root data/synthetic_freihand \
        --out pred.json [--overwrite]

`--data-root` and `--data.root` are the same option (the second is `handmesh fit`'s spelling).

Only `evaluation/rgb/` and `evaluation_K.json` are read (ground truth, when the folder has it, is ignored); beside the
file, `pred.json.meta.json` names the hand model and checkpoint (`handmesh.prediction`). Score the file with
`handmesh evaluate`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from handmesh.cli_values import ENGINES, check_can_write, checkpoint_file
from handmesh.errors import HandmeshError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True,
                        help="a .ckpt written by `handmesh fit`, a hub folder, an https:// URL or hf://owner/repo[/file]")
    parser.add_argument("--data.root", "--data-root", dest="root", required=True, type=Path,
                        help="FreiHAND_pub_v2 folder (or a synthetic one)")
    parser.add_argument("--out", required=True, type=Path, help="where to write pred.json")
    parser.add_argument("--overwrite", action="store_true", help="replace --out when it exists")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: 32)")
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader worker processes (default: 2)")
    parser.add_argument("--mano-dir", default=None,
                        help="MANO folder (default: $HANDMESH_MANO_DIR, data/mano, else the stand-in)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--engine", choices=ENGINES, default="auto", help="auto: ONNX Runtime on the CPU when it works")


def run(args: argparse.Namespace) -> int:
    from handmesh.inference import Predictor
    from handmesh.prediction import write_predictions

    if args.batch_size < 1 or args.num_workers < 0:
        raise HandmeshError(f"--batch-size {args.batch_size} / --num-workers {args.num_workers}: expected a batch size "
                            ">= 1 and a worker count >= 0.")
    out = check_can_write(args.out, args.overwrite)
    checkpoint = checkpoint_file(args.checkpoint)
    predictor = Predictor.from_checkpoint(checkpoint, mano_dir=args.mano_dir, device=args.device, engine=args.engine)
    print(predictor.description)
    files = write_predictions(predictor, args.root, out, checkpoint, args.batch_size, args.num_workers)
    print(f"wrote {files.pred_json}: {len(files.keypoints)} predictions (keypoints and vertices, metres, camera "
          f"frame), and {files.meta.name} beside it (hand model, checkpoint, date)")
    return 0
