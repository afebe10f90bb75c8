"""`handmesh standin`: write the stand-in hand model (MANO_RIGHT.pkl, MANO_LEFT.pkl) in MANO's file format."""

from __future__ import annotations

import argparse
from pathlib import Path

from handmesh.errors import HandmeshError
from handmesh.mano_file import DEFAULT_STANDIN_DIR, STANDIN_VERSION


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=DEFAULT_STANDIN_DIR,
                        help=f"folder for MANO_RIGHT.pkl and MANO_LEFT.pkl (default: {DEFAULT_STANDIN_DIR})")


def run(args: argparse.Namespace) -> int:
    from handmesh.standin import write_standin

    if args.out.exists() and not args.out.is_dir():
        raise HandmeshError(f"--out {args.out} is a file; expected a folder to write MANO_RIGHT.pkl and "
                            f"MANO_LEFT.pkl into. Pass a folder path.")
    try:
        paths = write_standin(args.out)
    except OSError as error:
        raise HandmeshError(f"could not write the stand-in model into {args.out}: {error}. "
                            f"Pass a writable folder with --out.") from error
    for path in paths:
        print(f"wrote {path} (handmesh stand-in hand model, version {STANDIN_VERSION}; not MANO)")
    return 0
