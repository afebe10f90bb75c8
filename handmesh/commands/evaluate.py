"""`handmesh evaluate --gt ROOT --pred pred.json --out DIR`: score predictions with the official FreiHAND protocol.

Writes DIR/scores.json (the 12 official scores), DIR/per_sample.csv (one row per sample, sorted by index) and
DIR/pck_curves.png, and prints the table in the papers' format (`handmesh.scoring`). The worst samples by PA-MPJPE:
`sort -t, -k2,2 -g -r DIR/per_sample.csv | head` (column 2; PA-MPVPE is column 3, F@5mm column 6).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from handmesh.errors import HandmeshError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "Worst samples: sort -t, -k2,2 -g -r DIR/per_sample.csv | head  (column 2 is PA-MPJPE in mm)"
    parser.add_argument("--gt", required=True, type=Path,
                        help="FreiHAND_pub_v2-style folder with evaluation_xyz.json and evaluation_verts.json")
    parser.add_argument("--pred", required=True, type=Path,
                        help="official prediction file [xyz_list, verts_list], metres, evaluation order")
    parser.add_argument("--out", required=True, type=Path, help="folder for scores.json, per_sample.csv, plots")
    parser.add_argument("--device", default="cpu", help="torch device for the measures: cpu (default) or cuda")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="samples per batch (memory only; default: handmesh.scoring.BATCH_SIZE)")


def run(args: argparse.Namespace) -> int:
    from handmesh.scoring import BATCH_SIZE, OUTPUT_FILES, evaluate, format_table

    batch_size = BATCH_SIZE if args.batch_size is None else args.batch_size
    if batch_size < 1:
        raise HandmeshError(f"--batch-size: expected a positive number, found {batch_size}")
    result = evaluate(args.gt, args.pred, args.out, args.device, batch_size)
    print(format_table(result.scores, result.num_samples, result.num_vertices))
    print(f"wrote {', '.join(str(args.out / name) for name in OUTPUT_FILES)}")
    return 0
