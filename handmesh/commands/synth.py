"""`handmesh synth`: render a synthetic dataset in FreiHAND's exact layout from any MANO-format hand model."""

from __future__ import annotations

import argparse

DEFAULT_OUT = "data/synthetic_freihand"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mano-dir", default=None,
                        help="MANO folder (default: $HANDMESH_MANO_DIR, data/mano, else the stand-in)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--train", type=int, default=2000, help="unique training samples (each written in 4 versions)")
    parser.add_argument("--eval", type=int, default=400, help="evaluation samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from handmesh.data.synth import synthesize

    synthesize(args.mano_dir, args.out, args.train, args.eval, seed=args.seed, progress=not args.no_progress)
    return 0
