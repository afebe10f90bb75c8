"""Atomic writes: a file or folder is written under a temporary name next to its target, flushed to disk, and renamed
over the target only when complete. A crash or an error leaves the old target (or none) and no temporary behind.

    with atomic_path(out) as temporary:       # a path that does not exist yet, named like `out`
        cv2.imwrite(str(temporary), image)     # write a file (or create a folder) there
    write_bytes_atomic(path, data)             # the common case

The temporary lives in a private hidden folder `.<name>.<random>` in the target's folder (the same file system, so the
final rename is atomic) and keeps the target's name, so writers that choose a format by the extension still work.
Files are created by the writer itself, so they get the usual permissions (the umask), not a temporary file's 0600.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike, sync: bool = True) -> Iterator[Path]:
    """Yields a not-yet-existing path named like `path` in a private folder beside it; when the block returns, what
    was written there (a file or a folder) is flushed to disk (`sync`) and replaces `path` (`replace_path`). When the
    block raises, or writes nothing (FileNotFoundError then), `path` is left as it was. The private folder is removed
    either way."""
    path = Path(path)
    folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    temporary = folder / path.name
    try:
        yield temporary
        if not os.path.lexists(temporary):
            raise FileNotFoundError(f"nothing was written to {temporary} (the temporary name of {path})")
        if sync:
            _sync(temporary)
        replace_path(temporary, path)
        if sync:
            _sync_folder(path.parent)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_bytes_atomic(path: str | os.PathLike, data: bytes | str, sync: bool = True) -> Path:
    """Writes `data` (str: UTF-8) to `path` atomically; returns the path."""
    path = Path(path)
    with atomic_path(path, sync) as temporary:
        temporary.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def replace_path(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """`os.replace` for files and folders: a folder cannot be renamed over an existing folder, so an existing target
    folder is first moved aside (into a private folder beside it), then deleted once `source` is in place."""
    source, target = Path(source), Path(target)
    if target.is_dir() and not target.is_symlink():
        aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
        try:
            os.replace(target, aside / target.name)
            try:
                os.replace(source, target)
            except BaseException:
                os.replace(aside / target.name, target)  # put the old one back
                raise
        finally:
            shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(source, target)


def _sync(path: Path) -> None:
    """fsync a file, or every file of a folder and the folders themselves."""
    if path.is_dir() and not path.is_symlink():
        for root, _, files in os.walk(path):
            for name in files:
                _fsync(Path(root) / name)
            _sync_folder(Path(root))
    elif path.is_file():
        _fsync(path)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _sync_folder(path: Path) -> None:
    """fsync a folder, which makes a rename in it durable (where the platform allows opening folders)."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename itself is still atomic
    finally:
        os.close(descriptor)
