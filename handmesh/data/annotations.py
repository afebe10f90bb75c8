"""FreiHAND annotation JSONs -> compact float32 `.npy` caches that every process memory-maps.

`training_verts.json` is ~1.5 GB of text. Parsing it whole with `json.load` takes minutes and several GB of RAM, and a
DataLoader worker must never do it again. The first use streams the JSON through orjson in blocks (bounded memory)
into one float32 array `(N, *entry_shape)` saved as `.npy`; later starts and all workers `np.load(..., mmap_mode="r")`.

The cache's file name records the JSON's size and mtime and the cache format version,
`<json name>.<size>-<mtime_ns>.v<version>.npy`, so one atomic `os.replace` makes a cache valid and a changed JSON
(or a new format) simply misses it and triggers a rebuild; stale caches of the same JSON are deleted then.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import orjson

from handmesh.atomic import atomic_path
from handmesh.errors import DataError
from handmesh.progress import progress_bar

CACHE_FORMAT_VERSION = 1
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "handmesh" / "annotations"  # used when the JSON's folder is read-only
_BLOCK_BYTES = 32 << 20  # JSON text read and parsed per step
_OPEN, _CLOSE = ord("["), ord("]")


def cache_path(json_path: Path, cache_dir: Path | None = None) -> Path:
    """Where the cache of `json_path` lives: `cache_dir` if given, next to the JSON if that folder is writable,
    else `DEFAULT_CACHE_DIR`. Outside the JSON's folder, the name carries a hash of the JSON's absolute path."""
    stat = json_path.stat()
    name = f"{json_path.name}.{stat.st_size}-{stat.st_mtime_ns}.v{CACHE_FORMAT_VERSION}.npy"
    if cache_dir is None and os.access(json_path.parent, os.W_OK):
        return json_path.parent / name
    folder = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    digest = hashlib.sha1(str(json_path.resolve()).encode()).hexdigest()[:10]
    return folder / f"{digest}-{name}"


def load_annotation(
    json_path: str | os.PathLike,
    entry_shape: tuple[int, ...],
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> np.ndarray:
    """(N, *entry_shape) float32, read-only memory map of the cached JSON; builds the cache first when missing/stale.

    `entry_shape` is what one list entry must hold, e.g. (778, 3) for `*_verts.json`; entries whose shape differs only
    by size-1 axes (FreiHAND's mano entries are 1x61) are accepted and reshaped.
    """
    json_path = Path(json_path)
    if not json_path.is_file():
        raise DataError(
            f"missing annotation file {json_path}: expected FreiHAND's {json_path.name} there. "
            "Unpack FreiHAND_pub_v2 completely (or generate a synthetic set with `handmesh synth`)."
        )
    target = cache_path(json_path, Path(cache_dir) if cache_dir is not None else None)
    if not target.is_file():
        _build_cache(json_path, target, tuple(entry_shape), progress)
    try:
        array = np.load(target, mmap_mode="r")
    except (ValueError, OSError):  # a cache damaged after it was written (disk full, foreign file): rebuild once
        target.unlink(missing_ok=True)
        _build_cache(json_path, target, tuple(entry_shape), progress)
        array = np.load(target, mmap_mode="r")
    if array.shape[1:] != tuple(entry_shape) or array.dtype != np.float32:
        raise DataError(
            f"cache {target} holds {array.dtype} {array.shape}, "
            f"expected float32 (N, {', '.join(map(str, entry_shape))}); delete it so it is rebuilt from the JSON."
        )
    return array


def _build_cache(json_path: Path, target: Path, entry_shape: tuple[int, ...], progress: bool) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(
            f"cannot create the annotation cache folder {target.parent} ({error}); pass a writable cache_dir."
        ) from None
    prefix = target.name[: target.name.index(json_path.name)]  # "" next to the JSON, "<hash>-" in a cache folder
    ours = re.compile(re.escape(prefix + json_path.name) + r"\.\d+-\d+\.v\d+\.npy")
    for stale in target.parent.glob(f"{prefix}{json_path.name}.*.npy"):
        if ours.fullmatch(stale.name) and stale != target:
            stale.unlink(missing_ok=True)
    raw_handle, raw_name = tempfile.mkstemp(prefix=f".{json_path.name}.", suffix=".raw", dir=target.parent)
    try:
        with os.fdopen(raw_handle, "wb") as raw:
            count = _stream_entries(json_path, entry_shape, raw, progress)
        if count == 0:
            raise DataError(f"{json_path} holds an empty list; expected one entry per sample. "
                            "Re-download or regenerate it.")
        _raw_to_npy(Path(raw_name), target, (count, *entry_shape))
    finally:
        Path(raw_name).unlink(missing_ok=True)


def _raw_to_npy(raw_path: Path, target: Path, shape: tuple[int, ...]) -> None:
    """Copies the float32 stream into an .npy with the final shape, then atomically puts it in place."""
    raw = np.memmap(raw_path, dtype=np.float32, mode="r", shape=shape)
    with atomic_path(target) as temporary:
        out = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.float32, shape=shape)
        step = max(1, (64 << 20) // max(1, raw[0].nbytes))
        for start in range(0, shape[0], step):
            out[start : start + step] = raw[start : start + step]
        out.flush()
        del out, raw


def _stream_entries(json_path: Path, entry_shape: tuple[int, ...], raw, progress: bool) -> int:
    """Parses the top-level JSON list block by block; writes float32 entries to `raw`; returns the entry count.

    Only bracket positions are examined (numbers and commas are left to orjson): an entry of a nested list ends at a
    `]` that brings the depth back to 1, and the list ends at the `]` that brings it to 0. The text up to the last
    complete entry is parsed as one `[...]` run; the rest is carried into the next block. (A flat list of numbers has
    no inner brackets, so it is parsed in one run when its closing bracket arrives.)
    """
    size = json_path.stat().st_size
    depth = 0  # bracket depth before the current block
    carry = b""  # text after the last complete entry (or after the opening bracket), not yet parsed
    opened = closed = False
    count = 0
    bar = progress_bar(total=size, unit="B", unit_scale=True, desc=f"caching {json_path.name}",
                       disable=not progress, leave=False, delay=1.0)
    with open(json_path, "rb") as handle:
        while block := handle.read(_BLOCK_BYTES):
            bar.update(len(block))
            if closed:
                if block.strip():
                    raise DataError(f"{json_path} has text after its closing bracket; expected one JSON list. "
                                    "Re-download it.")
                continue
            start = 0
            if not opened:
                stripped = block.lstrip()
                if not stripped:
                    continue
                if stripped[:1] != b"[":
                    raise DataError(
                        f"{json_path} does not start with '[': expected a JSON list with one entry per sample "
                        f"(FreiHAND's format). Re-download or regenerate it."
                    )
                opened, depth = True, 1
                start = len(block) - len(stripped) + 1
            chars = np.frombuffer(block, dtype=np.uint8)
            brackets = np.flatnonzero((chars == _OPEN) | (chars == _CLOSE))
            brackets = brackets[brackets >= start]
            after = depth + np.cumsum(np.where(chars[brackets] == _OPEN, 1, -1))  # depth after each bracket
            depth = int(after[-1]) if len(after) else depth
            ends = brackets[(chars[brackets] == _CLOSE) & (after == 1)]
            outer = brackets[after == 0]
            if len(outer):  # the list closes in this block: parse everything before its bracket
                close = int(outer[0])
                count += _parse_run(carry + block[start:close], json_path, entry_shape, count, raw)
                carry, closed = block[close + 1 :], True
                if carry.strip():
                    raise DataError(f"{json_path} has text after its closing bracket; expected one JSON list. "
                                    "Re-download it.")
            elif len(ends):
                last = int(ends[-1])
                count += _parse_run(carry + block[start : last + 1], json_path, entry_shape, count, raw)
                carry = block[last + 1 :]
            else:
                carry += block[start:]
    bar.close()
    if not opened:
        raise DataError(f"{json_path} is empty: expected a JSON list with one entry per sample. "
                        "Re-download or regenerate it.")
    if not closed:
        raise DataError(
            f"{json_path} ends before its list is closed (bracket depth {depth}): the file looks truncated. "
            "Re-download or regenerate it."
        )
    return count


def _parse_run(text: bytes, json_path: Path, entry_shape: tuple[int, ...], first_index: int, raw) -> int:
    """Parses `text` (entries separated by commas, maybe led by one) and appends them to `raw`; returns how many."""
    text = text.lstrip(b" \t\r\n,")
    if not text.strip():
        return 0
    try:
        entries = orjson.loads(b"[" + text + b"]")
    except orjson.JSONDecodeError as error:
        raise DataError(
            f"{json_path} is not valid JSON near entry {first_index} ({error}); the file may be truncated or edited. "
            "Re-download or regenerate it."
        ) from None
    try:
        array = np.asarray(entries, dtype=np.float32)
    except (ValueError, TypeError):
        raise DataError(
            f"{json_path}: entries from {first_index} on are not all numeric arrays of shape {entry_shape}; "
            "the file is not a FreiHAND annotation. Re-download or regenerate it."
        ) from None
    squeeze = lambda shape: tuple(n for n in shape if n != 1)  # noqa: E731
    if squeeze(array.shape[1:]) != squeeze(entry_shape):
        raise DataError(
            f"{json_path}: entries have shape {array.shape[1:]}, expected {entry_shape} per sample; "
            "is this the right file (K, xyz, verts, mano, scale)? Re-download or regenerate it."
        )
    array = np.ascontiguousarray(array.reshape(len(array), *entry_shape))
    raw.write(array.tobytes())
    return len(array)
