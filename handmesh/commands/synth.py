"""`handmesh synth`: render a synthetic dataset in FreiHAND's exact layout from any MANO-format hand model."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from pathlib import Path

from handmesh.errors import HandmeshError
from handmesh.paths import repo_path

DEFAULT_OUT = repo_path("data/synthetic_freihand")  # the quick start's set, in the checkout whatever the folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mano-dir", default=None,
                        help="MANO folder (default: $HANDMESH_MANO_DIR, data/mano, else the stand-in)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--train", type=int, default=2000, help="unique training samples (each written in 4 versions)")
    parser.add_argument("--eval", type=int, default=400, help="evaluation samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--back-fraction", type=float, default=None,
                        help="share of samples showing the back of the hand (default: FreiHAND's, half)")
    parser.add_argument("--max-roll", type=float, default=None,
                        help="largest in-plane roll, degrees (default: FreiHAND's, any angle)")
    parser.add_argument("--workers", type=int, default=None, help="rendering processes (default: one per core)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a synthetic dataset at --out made with other settings or another hand model")


def _replaced_settings(out: Path, requested: dict, is_standin: bool, sha1: str) -> list[str]:
    """What differs between the dataset `synthesize` would write and the one its marker at `out` describes: the
    settings a user chose and the hand model; a newer stand-in (a set written by an older handmesh) is not listed."""
    from handmesh.data.synth import MARKER

    try:
        existing = json.loads((out / MARKER).read_bytes())
    except (OSError, ValueError):
        return []  # no dataset of ours there: synthesize refuses a folder it did not write
    changed = [key for key, value in requested.items() if existing.get(key) != value]
    if existing.get("hand_model_sha1") != sha1 and not (is_standin and existing.get("is_standin")):
        changed.append("hand model")
    return changed


def run(args: argparse.Namespace) -> int:
    from handmesh.data.synth import ViewRange, synthesize
    from handmesh.mano_file import FILE_NAMES
    from handmesh.standin import ensure_standin

    given = {"back_fraction": args.back_fraction, "max_roll_deg": args.max_roll}
    views = ViewRange(**{name: value for name, value in given.items() if value is not None})
    source = ensure_standin(args.mano_dir, command="handmesh synth")
    if not args.overwrite:
        sha1 = hashlib.sha1((source.directory / FILE_NAMES["right"]).read_bytes()).hexdigest()
        requested = {"seed": args.seed, "n_train": args.train, "n_eval": args.eval, "views": dataclasses.asdict(views)}
        changed = _replaced_settings(Path(args.out), requested, source.is_standin, sha1)
        if changed:
            raise HandmeshError(
                f"--out {Path(args.out).absolute()} holds a synthetic dataset made with other settings "
                f"({', '.join(changed)}); refusing to replace it (predictions made on it would no longer match). "
                "Pass --overwrite to replace it, or choose another --out.")
    synthesize(args.mano_dir, Path(args.out).absolute(), args.train, args.eval, seed=args.seed, views=views,
               workers=args.workers, progress=not args.no_progress)
    return 0
