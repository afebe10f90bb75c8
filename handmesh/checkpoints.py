"""Checkpoint files: atomic writes and safe reads (weights_only: no code runs), and handmesh's own metadata in them.

Lightning writes the training state (weights, optimizer, scheduler, loops, callbacks); `lit_module` adds a
`handmesh` entry of plain values that lets `inference.Predictor` rebuild the network without Lightning. No Lightning
import here.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import zipfile
from pathlib import Path
from typing import BinaryIO, Callable

import torch

from handmesh.errors import CheckpointError

METADATA_KEY = "handmesh"  # checkpoint["handmesh"] = {"format": ..., "model_args": {...}, "mano": {...}}
# Construction arguments added after FORMAT_VERSION was set, with the value that rebuilds the older networks.
LATER_MODEL_ARGS = {"keypoint_head": False}
FORMAT_VERSION = 1
MODEL_PREFIX = "model."  # the LightningModule keeps the HandModel as `self.model`
_WHAT_TO_DO = "Use another checkpoint (runs/<name>/checkpoints/last.ckpt or best.ckpt) or train again."


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """write(file) into a temporary file in the same folder, flushed to disk, then renamed over `path`: a crash never
    leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_save(checkpoint: dict, path: str | os.PathLike) -> None:
    """torch.save, atomically (`atomic_write`)."""
    atomic_write(path, lambda file: torch.save(checkpoint, file))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """UTF-8 text, atomically (`atomic_write`)."""
    atomic_write(path, lambda file: file.write(text.encode("utf-8")))


def read_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint with `torch.load(weights_only=True)`; every failure becomes a CheckpointError that says why."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: expected a .ckpt file written by `handmesh fit` "
                              "(e.g. runs/quickstart/checkpoints/best.ckpt).")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        unsafe = re.search(r"GLOBAL ([\w.]+)", str(error))
        if unsafe:  # a Python object to import and call: what weights_only exists to stop
            raise CheckpointError(
                f"refusing to load {path}: it holds Python objects ({unsafe.group(1)}), not only tensors and plain "
                "values. Expected a checkpoint written by `handmesh fit`; a foreign or tampered file could run code."
            ) from None
        raise CheckpointError(f"{path} is not a readable checkpoint (not a file written by torch.save); expected a "
                              f".ckpt written by `handmesh fit`. {_WHAT_TO_DO}") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(error).__name__}: {_first_line(error)}); "
                              f"it may be truncated or corrupt. {_WHAT_TO_DO}") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"{path} holds no model state_dict; expected a checkpoint written by `handmesh fit`.")
    return checkpoint


def metadata(checkpoint: dict, path: str | os.PathLike) -> dict:
    """The `handmesh` entry (format, model_args, mano), checked; a CheckpointError for other programs' checkpoints."""
    entry = checkpoint.get(METADATA_KEY)
    if not isinstance(entry, dict) or not isinstance(entry.get("model_args"), dict):
        raise CheckpointError(
            f"{path} is a checkpoint from another program or model (no '{METADATA_KEY}' entry with the network's "
            "construction arguments); expected one written by `handmesh fit`."
        )
    if entry.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} uses handmesh checkpoint format {entry.get('format')}, expected {FORMAT_VERSION}; "
            "use the handmesh version that wrote it, or train again."
        )
    for key, value in LATER_MODEL_ARGS.items():  # checkpoints written before the argument existed
        entry["model_args"].setdefault(key, value)
    return entry


def model_state_dict(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The HandModel's weights from a Lightning checkpoint (the `model.` prefix removed)."""
    state = checkpoint["state_dict"]
    return {key[len(MODEL_PREFIX):]: value for key, value in state.items() if key.startswith(MODEL_PREFIX)}


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
