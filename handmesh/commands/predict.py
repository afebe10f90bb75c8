"""`handmesh predict`: the evaluation split's predictions as an official FreiHAND `pred.json` (camera frame, metres).

    handmesh predict --checkpoint runs/quickstart/checkpoints/best.ckpt --data-root data/synthetic_freihand \
        --out pred.json [--overwrite]

`--data-root` and `--data.root` are the same option (the second is `handmesh fit`'s spelling).

Each evaluation image is read whole and resized to the network's input size (as in training); the root position comes
from the predicted weak-perspective camera and the crop's K. Only `evaluation/rgb/` and `evaluation_K.json` are read
(ground truth, when the folder has it, is ignored). Score the file with `handmesh evaluate`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from handmesh.cli_values import ENGINES, check_can_write, checkpoint_file
from handmesh.errors import HandmeshError

if TYPE_CHECKING:
    import numpy as np

    from handmesh.data.freihand import FreiHANDDataset
    from handmesh.inference import Predictor


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


def predict_split(predictor: Predictor, dataset: FreiHANDDataset, batch_size: int,
                  num_workers: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 21, 3) keypoints and (N, 778, 3) vertices, metres, camera frame, in dataset order."""
    import numpy as np
    from tqdm import tqdm

    from handmesh.data.datamodule import freihand_loader

    loader = freihand_loader(dataset, batch_size, num_workers)  # in order, as validation reads it
    keypoints, vertices = [], []
    for batch in tqdm(loader, desc="predict", unit="batch", disable=None):  # no bar when stderr is not a terminal
        prediction = predictor.predict_images(batch["image"], batch["K"])
        keypoints.append(prediction.keypoints_3d)
        vertices.append(prediction.vertices)
    return np.concatenate(keypoints), np.concatenate(vertices)


def run(args: argparse.Namespace) -> int:
    from handmesh.data.freihand import FreiHANDDataset
    from handmesh.inference import Predictor
    from handmesh.predjson import write_pred_json

    if args.batch_size < 1 or args.num_workers < 0:
        raise HandmeshError(f"--batch-size {args.batch_size} / --num-workers {args.num_workers}: expected a batch size "
                            ">= 1 and a worker count >= 0.")
    out = check_can_write(args.out, args.overwrite)
    predictor = Predictor.from_checkpoint(checkpoint_file(args.checkpoint), mano_dir=args.mano_dir, device=args.device,
                                          engine=args.engine)
    print(predictor.description)
    dataset = FreiHANDDataset(args.root, split="evaluation", input_size=predictor.input_size, augment=None,
                              labels=False)  # images and evaluation_K.json, as the official pred.py reads them
    keypoints, vertices = predict_split(predictor, dataset, args.batch_size, args.num_workers)
    write_pred_json(out, keypoints, vertices)
    print(f"wrote {out}: {len(keypoints)} predictions (keypoints and vertices, metres, camera frame)")
    return 0
