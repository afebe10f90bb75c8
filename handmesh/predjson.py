"""The official FreiHAND prediction file and evaluation annotations: read, validate, write.

`pred.json` = `[xyz_list, verts_list]`: N x 21 x 3 keypoints and N x 778 x 3 vertices, metres, camera frame, in
evaluation-set order (docs/evaluation.md). Ground truth: `ROOT/evaluation_xyz.json` and
`ROOT/evaluation_verts.json` in a FreiHAND_pub_v2 folder. `pred.json.meta.json` beside a pred.json (the official
format has no room for it) says which hand model and checkpoint made it and when. Every problem a user can cause is a
`HandmeshError` that says what was expected, what was found and what to do.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import orjson

from handmesh.atomic import write_bytes_atomic
from handmesh.errors import DataError, HandmeshError, PredictionFileError
from handmesh.joints import NUM_KEYPOINTS, NUM_VERTICES

GT_FILES = ("evaluation_xyz.json", "evaluation_verts.json")
# A hand is ~0.2 m long: in metres its keypoints sit a few centimetres from their centroid and the camera a few
# decimetres away. Medians above these limits mean another unit (millimetres give ~50 and ~500).
MAX_MEDIAN_SPREAD_M = 1.0
MAX_MEDIAN_COORDINATE_M = 10.0
_NON_FINITE = re.compile(rb"NaN|-?Infinity")
_NUMBER_BYTES = b"0123456789.eE+-"  # what a JSON number is made of
_BLANK_BYTES = b" \t\n\r"
_BRACKETS_TO_BLANKS = bytes.maketrans(b"[]", b"  ")
SCALE_CHECK_SAMPLES = 500  # the unit check's medians look at this many evenly spaced samples
META_SUFFIX = ".meta.json"  # pred.json -> pred.json.meta.json


def _read_bytes(path: Path, error: type[HandmeshError], what: str) -> bytes:
    if not path.is_file():
        raise error(f"{what}: expected a JSON file at {path}, found {'a folder' if path.exists() else 'nothing'}; "
                    "check the path (ground truth: the FreiHAND_pub_v2 folder; predictions: `handmesh predict --out`)")
    return path.read_bytes()


def _load_json(data: bytes, path: Path, error: type[HandmeshError], what: str):
    """The careful parse: any JSON, with a message saying what is wrong with the file."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as decode_error:
        found = _NON_FINITE.search(data)
        if found is not None:
            raise error(f"{what} {path}: expected finite numbers, found {found.group().decode()} at byte "
                        f"{found.start()} (not valid JSON, and not a usable coordinate); fix the NaN/inf values at "
                        "their source and write the file again") from None
        raise error(f"{what} {path}: expected valid JSON, found an error ({decode_error}) in a {len(data):,}-byte "
                    "file; it is probably truncated or was written by something else: write it again") from None


def _regular_arrays(data: bytes, lists: int) -> list[np.ndarray] | None:
    """Fast path for the official layout: `lists` = 1 for one N x P x 3 list of numbers (a ground-truth file), 2 for
    `[xyz_list, verts_list]`. -> one (N, P, 3) float64 array per list, or None when the file is anything else (the
    careful path then parses it again and says what is wrong).

    The structure is checked on the file with every number and blank removed (it must be exactly the nesting of
    regular lists of triples); the numbers are then parsed as one flat JSON list, which must be valid JSON with one
    number per slot. Measured on FreiHAND-sized files: ~2.5x faster than orjson on nested lists and `np.asarray`.
    """
    skeleton = data.translate(None, _NUMBER_BYTES + _BLANK_BYTES)
    if lists == 2:
        end = skeleton.find(b"]]]") + 3  # the first list ends at the first "]]]"
        if end < 3 or skeleton[:1] != b"[" or skeleton[end:end + 1] != b"," or skeleton[-1:] != b"]":
            return None
        parts = [skeleton[1:end], skeleton[end + 1:-1]]
    else:
        parts = [skeleton]
    shapes = [_regular_shape(part) for part in parts]
    if None in shapes:
        return None
    flat_text = bytearray(data).translate(_BRACKETS_TO_BLANKS)  # every number in one list: keep the outer brackets
    flat_text[data.index(b"[")], flat_text[data.rindex(b"]")] = ord("["), ord("]")
    try:
        numbers = orjson.loads(flat_text)
        flat = np.fromiter(numbers, dtype=np.float64, count=len(numbers))  # 2x faster than np.array on a list
    except (orjson.JSONDecodeError, TypeError, ValueError, OverflowError):
        return None
    sizes = [count * points * 3 for count, points in shapes]
    if flat.ndim != 1 or len(flat) != sum(sizes):
        return None
    pieces = np.split(flat, np.cumsum(sizes)[:-1])
    return [piece.reshape(count, points, 3) for piece, (count, points) in zip(pieces, shapes)]


def _regular_shape(skeleton: bytes) -> tuple[int, int] | None:
    """b"[[[,,],[,,]],[[,,],[,,]]]" (a list of N lists of P triples, numbers removed) -> (N, P); None otherwise."""
    if not skeleton.startswith(b"[[[,,]"):
        return None
    points = skeleton.count(b"[,,]", 0, skeleton.find(b"]]") + 1)  # triples in the first sample
    sample = b"[" + b",".join([b"[,,]"] * points) + b"]"
    count = (len(skeleton) - 1) // (len(sample) + 1)  # len = 2 + N len(sample) + (N - 1) commas
    return (count, points) if skeleton == b"[" + b",".join([sample] * count) + b"]" else None


def _shape_of(sample) -> str:
    """'21x3' for a regular nested list, a short description otherwise."""
    if not isinstance(sample, list):
        return f"a single {type(sample).__name__}"
    if not all(isinstance(row, list) for row in sample):
        return f"a flat list of {len(sample)} values"
    lengths = {len(row) for row in sample}
    return f"{len(sample)}x{lengths.pop()}" if len(lengths) == 1 else f"{len(sample)} rows of uneven lengths"


def _as_array(samples, name: str, points: int | None, error: type[HandmeshError], source: str) -> np.ndarray:
    """A list of N (points, 3) nested lists -> (N, points, 3) float64; `points=None` accepts any common count."""
    expected = f"{points if points is not None else NUM_VERTICES}x3"
    if not isinstance(samples, list) or not samples:
        found = "an empty list" if isinstance(samples, list) else type(samples).__name__
        raise error(f"{source}: expected {name} as a list of {expected} lists, found {found}")
    try:
        array = np.asarray(samples, dtype=np.float64)
    except (ValueError, TypeError):  # ragged nesting, or null / text entries
        array = None
    if array is None or array.ndim != 3 or array.shape[2] != 3 or (points is not None and array.shape[1] != points):
        first = _shape_of(samples[0])
        odd = next((i for i, sample in enumerate(samples) if _shape_of(sample) != first), None)
        if odd is not None:
            found = f"sample {odd} is {_shape_of(samples[odd])} while sample 0 is {first}"
        elif array is None:
            found = f"entries that are not numbers (null or text) in {first} samples"
        else:
            found = f"{first} in every sample"
        raise error(f"{source}: expected {name} as {len(samples)} samples of {expected} numbers (metres), found "
                    f"{found}; write one {expected} list per sample, in evaluation order")
    _check_finite(array, name, error, source)
    return array


def _check_finite(array: np.ndarray, name: str, error: type[HandmeshError], source: str) -> None:
    bad = np.flatnonzero(~np.isfinite(array).all(axis=(1, 2)))
    if len(bad):
        raise error(f"{source}: expected finite {name}, found NaN or inf in {len(bad)} samples (first: {bad[0]}); "
                    "fix the values at their source")


def check_scale(points: np.ndarray, name: str, error: type[HandmeshError], source: str) -> None:
    """Refuse (N, P, 3) coordinates that are clearly not metres (millimetres, most likely)."""
    if len(points) == 0:
        return
    points = points[::max(1, len(points) // SCALE_CHECK_SAMPLES)]
    spread = float(np.median(np.linalg.norm(points - points.mean(1, keepdims=True), axis=-1)))
    coordinate = float(np.median(np.abs(points)))
    if spread > MAX_MEDIAN_SPREAD_M or coordinate > MAX_MEDIAN_COORDINATE_M:
        raise error(f"{source}: expected {name} in metres (median distance from the hand's centroid ~0.05, median "
                    f"|coordinate| below 1), found {spread:.3g} and {coordinate:.3g}: this looks like millimetres; the "
                    "official format is metres: divide by 1000")


def check_pred_arrays(xyz: np.ndarray, verts: np.ndarray, source: str) -> None:
    """Validate predictions already in arrays: (N, 21, 3) keypoints and (N, V, 3) vertices, finite, metres."""
    if xyz.ndim != 3 or xyz.shape[1:] != (NUM_KEYPOINTS, 3):
        raise PredictionFileError(f"{source}: expected keypoints of shape (N, {NUM_KEYPOINTS}, 3), found "
                                  f"{tuple(xyz.shape)}")
    if verts.ndim != 3 or verts.shape[2] != 3 or verts.shape[0] != xyz.shape[0]:
        raise PredictionFileError(f"{source}: expected vertices of shape ({xyz.shape[0]}, {NUM_VERTICES}, 3), "
                                  f"found {tuple(verts.shape)}")
    for name, array in (("keypoints", xyz), ("vertices", verts)):
        if not np.isfinite(array).all():
            first = int(np.flatnonzero(~np.isfinite(array).all(axis=(1, 2)))[0])
            raise PredictionFileError(f"{source}: expected finite {name}, found NaN or inf (first in sample {first})")
        check_scale(array, name, PredictionFileError, source)


def read_pred_json(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Official `pred.json` -> (xyz (N, 21, 3), verts (N, V, 3)) float64 metres; V is 778 for MANO meshes."""
    path = Path(path)
    raw = _read_bytes(path, PredictionFileError, "prediction file")
    arrays = _regular_arrays(raw, lists=2)
    if arrays is not None and arrays[0].shape[1] == NUM_KEYPOINTS:
        xyz, verts = arrays
    else:
        xyz, verts = _careful_pred_arrays(raw, path)
    if len(xyz) != len(verts):
        raise PredictionFileError(f"{path}: expected as many vertex sets as keypoint sets, found {len(xyz)} keypoint "
                                  f"and {len(verts)} vertex sets")
    check_pred_arrays(xyz, verts, str(path))
    return xyz, verts


def _careful_pred_arrays(raw: bytes, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Any prediction file the fast path refused: parsed as JSON, every problem said in words."""
    data = _load_json(raw, path, PredictionFileError, "prediction file")
    if not isinstance(data, list) or len(data) != 2:
        found = (f"a list of {len(data)} entries" if isinstance(data, list)
                 else f"an object with keys {sorted(data)[:5]}" if isinstance(data, dict) else type(data).__name__)
        raise PredictionFileError(f"prediction file {path}: expected the official format [xyz_list, verts_list] "
                                  f"(a list of 2 lists), found {found}; write it with "
                                  "handmesh.predjson.write_pred_json")
    xyz = _as_array(data[0], "keypoints (xyz_list)", NUM_KEYPOINTS, PredictionFileError, str(path))
    verts = _as_array(data[1], "vertices (verts_list)", None, PredictionFileError, str(path))
    return xyz, verts


def write_pred_json(path: str | os.PathLike, xyz, verts) -> Path:
    """Write the official `[xyz_list, verts_list]`: xyz (N, 21, 3), verts (N, 778, 3) metres (numpy or torch, float32
    keeps the file small). Validated like `read_pred_json`; written atomically. Returns the path."""
    xyz, verts = _to_numpy(xyz), _to_numpy(verts)
    path = Path(path)
    check_pred_arrays(xyz, verts, f"predictions for {path}")
    payload = orjson.dumps([xyz, verts], option=orjson.OPT_SERIALIZE_NUMPY)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, payload)
    return path


def pred_meta_path(path: str | os.PathLike) -> Path:
    """The sidecar of a prediction file: `pred.json` -> `pred.json.meta.json`."""
    path = Path(path)
    return path.with_name(path.name + META_SUFFIX)


def write_pred_meta(path: str | os.PathLike, meta: dict) -> Path:
    """Write pred.json's sidecar (JSON object: hand_model, is_standin, checkpoint, written, ...) atomically."""
    sidecar = pred_meta_path(path)
    write_bytes_atomic(sidecar, orjson.dumps(meta, option=orjson.OPT_INDENT_2))
    return sidecar


def read_pred_meta(path: str | os.PathLike) -> dict | None:
    """pred.json's sidecar as a dict, or None when there is none (or it is not a JSON object)."""
    try:
        meta = orjson.loads(pred_meta_path(path).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return meta if isinstance(meta, dict) else None


def _to_numpy(array) -> np.ndarray:
    """numpy or torch -> C-contiguous float32/float64 numpy (what orjson serialises)."""
    if hasattr(array, "detach"):  # a torch tensor
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    return np.ascontiguousarray(array if array.dtype in (np.float32, np.float64) else array.astype(np.float64))




def read_eval_ground_truth(root: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """FreiHAND_pub_v2-style folder -> (xyz (N, 21, 3), verts (N, 778, 3)) float64 metres of the evaluation split."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"ground truth: expected a FreiHAND_pub_v2 folder containing {' and '.join(GT_FILES)}, found "
                        f"{'a file' if root.exists() else 'no such folder'} at {root}; pass --gt the unpacked folder")
    missing = [name for name in GT_FILES if not (root / name).is_file()]
    if missing:
        raise DataError(f"ground truth: expected {', '.join(missing)} in {root}, found no such file; the evaluation "
                        "annotations come with FreiHAND_pub_v2 (or `handmesh synth` for a synthetic set)")
    xyz = _read_ground_truth_file(root / GT_FILES[0], "keypoints", NUM_KEYPOINTS)
    verts = _read_ground_truth_file(root / GT_FILES[1], "vertices", NUM_VERTICES)
    if len(xyz) != len(verts):
        raise DataError(f"ground truth in {root}: expected as many vertex sets as keypoint sets, found {len(xyz)} and "
                        f"{len(verts)}; one of the files is from another split or damaged")
    check_scale(xyz, "keypoints", DataError, str(root / GT_FILES[0]))
    return xyz, verts


def _read_ground_truth_file(path: Path, name: str, points: int) -> np.ndarray:
    """One annotation file (N x points x 3 numbers) -> (N, points, 3) float64, finite."""
    raw = _read_bytes(path, DataError, "ground truth")
    arrays = _regular_arrays(raw, lists=1)
    if arrays is None or arrays[0].shape[1] != points:
        return _as_array(_load_json(raw, path, DataError, "ground truth"), name, points, DataError, str(path))
    _check_finite(arrays[0], name, DataError, str(path))
    return arrays[0]
