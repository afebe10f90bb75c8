"""Command-line values checked once, for every command: camera intrinsics, positive finite numbers, and outputs that
are replaced only when asked (`--overwrite`). Light at import (no torch), so `--help` stays fast."""

from __future__ import annotations

import math
import os
from pathlib import Path

from handmesh.errors import HandmeshError

ENGINES = ("auto", "torch", "onnxruntime")  # what Predictor runs on; here so --help needs no torch

VERBOSE_ENV = "HANDMESH_VERBOSE"  # "1": messages add their details (`handmesh -v`); worker processes inherit it


def positive_finite(value: float, option: str) -> float:
    """`value` as a float when it is finite and > 0; a HandmeshError naming `option` otherwise."""
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise HandmeshError(f"{option} is {value}; expected a finite number > 0.")
    return number


def parse_intrinsics(text: str | None, option: str = "--intrinsics") -> tuple[float, float, float, float] | None:
    """'fx,fy,cx,cy' (pixels) -> (fx, fy, cx, cy): four finite numbers separated by commas, focal lengths > 0."""
    if text is None:
        return None
    parts = [part.strip() for part in text.split(",")]
    hint = " (separate them with commas, no spaces: e.g. 500,500,112,112)" if len(parts) == 1 and " " in text.strip() \
        else " (e.g. 500,500,112,112)"
    try:
        values = tuple(float(part) for part in parts)
    except ValueError:
        values = ()
    if len(values) != 4 or not all(math.isfinite(v) for v in values) or values[0] <= 0 or values[1] <= 0:
        raise HandmeshError(f"{option} {text!r}: expected four finite numbers fx,fy,cx,cy in pixels with fx, fy > 0"
                            f"{hint}.")
    return values


def check_can_write(path: str | os.PathLike, overwrite: bool, option: str = "--out") -> Path:
    """`path` as an absolute Path when nothing is there or `overwrite` is set; a HandmeshError otherwise."""
    path = Path(path).expanduser().absolute()
    if path.exists() and not overwrite:
        raise HandmeshError(f"{option} {path} exists; refusing to replace it. Pass --overwrite to replace it, or "
                            f"choose another {option}.")
    return path


def checkpoint_file(path: str | os.PathLike, option: str = "--checkpoint") -> Path | str:
    """`path` as an absolute Path; a folder is refused with the `.ckpt` files it holds (and its checkpoints/ holds)
    listed, so the message says which file to pass."""
    if str(path).startswith(("hf://", "https://", "http://")):
        return path  # resolved (downloaded) by handmesh.checkpoints.resolve_checkpoint
    path = Path(path).expanduser().absolute()
    if not path.is_dir() or (path / "model.safetensors").is_file():  # a file, or a folder `export --format hub` wrote
        return path
    found = sorted(str(file) for folder in (path, path / "checkpoints") if folder.is_dir()
                   for file in folder.glob("*.ckpt"))
    listing = ("; it holds " + ", ".join(found[:10]) + (f" and {len(found) - 10} more" if len(found) > 10 else "")
               if found else "; it holds no .ckpt file (a run writes checkpoints/best.ckpt and last.ckpt)")
    raise HandmeshError(f"{option} {path} is a folder; expected a .ckpt file{listing}. Pass one of them.")
