"""`handmesh synth`: render a synthetic dataset in FreiHAND's exact layout from any MANO-format hand model."""

from __future__ import annotations

import argparse

DEFAULT_OUT = "data/synthetic_freihand"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from handmesh.data.synth import ViewRange

    views = ViewRange()
    parser.add_argument("--mano-dir", default=None,
                        help="MANO folder (default: $HANDMESH_MANO_DIR, data/mano, else the stand-in)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--train", type=int, default=2000, help="unique training samples (each written in 4 versions)")
    parser.add_argument("--eval", type=int, default=400, help="evaluation samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--back-fraction", type=float, default=views.back_fraction,
                        help=f"share of samples showing the back of the hand (default {views.back_fraction})")
    parser.add_argument("--max-roll", type=float, default=views.max_roll_deg,
                        help=f"largest in-plane roll, degrees (default {views.max_roll_deg:g}: any angle)")
    parser.add_argument("--workers", type=int, default=None, help="rendering processes (default: one per core)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from handmesh.data.synth import ViewRange, synthesize

    views = ViewRange(back_fraction=args.back_fraction, max_roll_deg=args.max_roll)
    synthesize(args.mano_dir, args.out, args.train, args.eval, seed=args.seed, views=views, workers=args.workers,
               progress=not args.no_progress)
    return 0
