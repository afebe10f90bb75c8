"""Repository paths that do not depend on the current folder: defaults that name files of the checkout (configs, the
data folder, the stand-in folder) resolve against its root, so commands work the same from any folder."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]  # the checkout: handmesh/, configs/, data/


def repo_path(relative: str | os.PathLike) -> Path:
    """`relative` (a path inside the checkout, e.g. "configs/quickstart.yaml") as an absolute path."""
    return REPO_ROOT / relative


def here_or_in_repo(path: str | os.PathLike) -> Path:
    """`path` made absolute: as given when it exists (or is absolute); else the checkout's file of that relative
    name when that exists (a repository default named from another folder); else as given, for the message."""
    path = Path(path).expanduser()
    if path.is_absolute() or path.exists() or not (REPO_ROOT / path).exists():
        return path.absolute()
    return REPO_ROOT / path


def user_cache_dir() -> Path:
    """$XDG_CACHE_HOME/handmesh, else ~/.cache/handmesh: downloads, built engines, the commands' help texts."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "handmesh"
