"""Reading MANO model files safely, with or without chumpy, and finding them on disk.

Users have `MANO_RIGHT.pkl` / `MANO_LEFT.pkl` either as the original Python-2 pickle (chumpy objects, a scipy sparse
`J_regressor`) or as a "chumpy-free" converted copy (plain numpy). Both load here without chumpy: a restricted
unpickler admits only what a MANO file holds (numpy arrays, scipy sparse matrices, chumpy objects, which become numpy)
and refuses every other global before anything runs, so a booby-trapped pickle executes nothing.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse

from handmesh.cli_values import VERBOSE_ENV
from handmesh.errors import ManoFileError
from handmesh.joints import MANO_PARENTS, NUM_BETAS, NUM_FACES, NUM_MANO_JOINTS, NUM_VERTICES
from handmesh.paths import repo_path

DEFAULT_MANO_DIR = repo_path("data/mano")  # where users put mano_v1_2/models/MANO_*.pkl (or its contents)
DEFAULT_STANDIN_DIR = repo_path("data/mano_standin")  # where `handmesh standin` writes the stand-in
MANO_DIR_ENV = "HANDMESH_MANO_DIR"
STANDIN_KEY = "handmesh_standin"  # extra key that marks the stand-in model's files
STANDIN_VERSION_KEY = "handmesh_standin_version"  # extra key: the stand-in's STANDIN_VERSION (absent before 2)
STANDIN_VERSION = 2  # bump whenever the generated stand-in changes, so existing copies are regenerated
REGRESSOR_ROW_SUM_TOLERANCE = 1e-3  # each J_regressor row is a weighted mean of vertices: it sums to 1
FILE_NAMES = {"right": "MANO_RIGHT.pkl", "left": "MANO_LEFT.pkl"}
HOW_TO_GET_MANO = (
    "Download MANO from https://mano.is.tue.mpg.de (free registration), unpack it and copy "
    f"mano_v1_2/models/MANO_RIGHT.pkl and MANO_LEFT.pkl into {DEFAULT_MANO_DIR}/ (or pass --mano-dir / set "
    "HANDMESH_MANO_DIR). "
    "Without MANO, `handmesh standin` writes a stand-in model in MANO's format."
)


@dataclass(frozen=True)
class ManoModelData:
    """The arrays of one MANO model file, as plain float64/int64 numpy."""

    v_template: np.ndarray  # (778, 3) metres, rest-pose mesh
    faces: np.ndarray  # (1538, 3) int64 triangle vertex ids
    J_regressor: np.ndarray  # (16, 778) joints = J_regressor @ vertices
    parents: np.ndarray  # (16,) int64, -1 for the root
    weights: np.ndarray  # (778, 16) skinning weights
    shapedirs: np.ndarray  # (778, 3, 10) shape blend shapes
    posedirs: np.ndarray  # (778, 3, 135) pose-corrective blend shapes
    hands_components: np.ndarray  # (45, 45) PCA basis of finger poses (rows)
    hands_mean: np.ndarray  # (45,) mean finger pose, axis-angle
    hands_coeffs: np.ndarray | None  # (N, 45) PCA coefficients of example poses, when the file has them
    side: str  # "right" or "left"
    path: Path
    is_standin: bool  # True for handmesh's generated stand-in, False for real MANO
    standin_version: int | None = None  # the stand-in's STANDIN_VERSION (1 for files older than the key); MANO: None

    def describe(self) -> str:
        kind = "the handmesh STAND-IN hand model (not MANO)" if self.is_standin else "MANO"
        return f"{kind}, {self.side} hand, from {self.path}"


class _ChumpyObject:
    """What a pickled chumpy object becomes: its state, kept to be turned into numpy."""

    def __setstate__(self, state):
        self.state = state


class _ManoUnpickler(pickle.Unpickler):
    """Admits numpy arrays, scipy sparse matrices and chumpy objects; refuses every other global."""

    _NUMPY = {
        ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
        ("numpy.core.multiarray", "scalar"): np._core.multiarray.scalar,
        ("numpy._core.multiarray", "scalar"): np._core.multiarray.scalar,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("copy_reg", "_reconstructor"): __import__("copyreg")._reconstructor,
        ("copyreg", "_reconstructor"): __import__("copyreg")._reconstructor,
        ("__builtin__", "object"): object,
        ("builtins", "object"): object,
        ("__builtin__", "set"): set,
        ("builtins", "set"): set,
        ("_codecs", "encode"): __import__("codecs").encode,  # how Python 3 writes bytes at protocol 2
    }
    _SPARSE = {"csc_matrix", "csr_matrix", "coo_matrix"}

    def find_class(self, module: str, name: str):
        if (module, name) in self._NUMPY:
            return self._NUMPY[(module, name)]
        if module.startswith("scipy.sparse") and name in self._SPARSE:
            return getattr(scipy.sparse, name)
        if module == "chumpy" or module.startswith("chumpy."):
            return _ChumpyObject
        raise pickle.UnpicklingError(f"the file refers to `{module}.{name}`, which a MANO file never holds")


def _to_numpy(value, key: str, path: Path) -> np.ndarray:
    if isinstance(value, _ChumpyObject):
        state = value.state if isinstance(value.state, dict) else {}
        if "x" not in state:
            raise ManoFileError(
                f"{path}: key {key!r} is a derived chumpy expression, not a plain array; expected the original MANO "
                f"file or a chumpy-free copy. {HOW_TO_GET_MANO}"
            )
        value = state["x"]
    if scipy.sparse.issparse(value):
        return np.asarray(value.toarray(), dtype=np.float64)
    return np.asarray(value)


def _read_pickle(path: Path) -> dict:
    if not path.is_file():
        raise ManoFileError(f"no MANO file at {path}: expected {path.name} there. {HOW_TO_GET_MANO}")
    try:
        with open(path, "rb") as handle:
            data = _ManoUnpickler(handle, encoding="latin1").load()
    except pickle.UnpicklingError as error:
        raise ManoFileError(
            f"refusing to load {path}: {error}. Expected a MANO model pickle; this file may be foreign or unsafe. "
            f"{HOW_TO_GET_MANO}"
        ) from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError,
            UnicodeDecodeError) as error:
        raise ManoFileError(
            f"{path} is not a readable MANO pickle ({type(error).__name__}: {error}); it may be truncated or not a "
            f"MANO file. {HOW_TO_GET_MANO}"
        ) from None
    if not isinstance(data, dict):
        raise ManoFileError(f"{path} holds a {type(data).__name__}, expected MANO's dict of arrays. {HOW_TO_GET_MANO}")
    return data


def _check_shape(array: np.ndarray, shape: tuple, key: str, path: Path) -> np.ndarray:
    if array.shape != shape:
        raise ManoFileError(
            f"{path}: {key!r} has shape {array.shape}, expected {shape} as in MANO; the file is not a MANO hand model. "
            f"{HOW_TO_GET_MANO}"
        )
    return array


def _check_regressor(J_regressor: np.ndarray, path: Path) -> np.ndarray:
    """(16, 778) J_regressor, checked: each row is a weighted mean of vertices, so it sums to 1."""
    if J_regressor.shape != (NUM_MANO_JOINTS, NUM_VERTICES):
        raise ManoFileError(
            f"{path}: 'J_regressor' has shape {J_regressor.shape}, expected {(NUM_MANO_JOINTS, NUM_VERTICES)} "
            f"(16 joints x 778 vertices) as in MANO; the file is not a MANO hand model or was damaged. "
            f"{HOW_TO_GET_MANO}"
        )
    sums = J_regressor.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > REGRESSOR_ROW_SUM_TOLERANCE)
    if len(bad):
        found = ", ".join(f"joint {j}: {sums[j]:.6g}" for j in bad[:4]) + (" ..." if len(bad) > 4 else "")
        raise ManoFileError(
            f"{path}: 'J_regressor' rows must each sum to 1 (a weighted mean of vertices, within "
            f"{REGRESSOR_ROW_SUM_TOLERANCE:g}); found {found}. The file was altered or damaged: use MANO's original "
            f"file or a faithful chumpy-free copy. {HOW_TO_GET_MANO}"
        )
    return J_regressor


def _standin_version(data: dict) -> int | None:
    """The stand-in version a loaded file dict was written with; None for MANO (no stand-in marker)."""
    if STANDIN_KEY not in data:
        return None
    version = data.get(STANDIN_VERSION_KEY, 1)
    return int(version) if isinstance(version, (int, np.integer)) else 1


def detect_side(v_template: np.ndarray, J_regressor: np.ndarray) -> str | None:
    """Chirality from the rest pose: the thumb's base sits on the palm side. None when the geometry can't tell.

    With d = wrist -> middle base and l = pinky base -> index base (toward the thumb), a right hand's palm normal is
    l x d; a mirrored (left) hand flips it. The thumb's first joint lies on the palmar side of the palm plane.
    """
    joints = J_regressor @ v_template  # (16, 3)
    wrist, index1, middle1, pinky1, thumb1 = joints[[0, 1, 4, 7, 13]]
    palm_normal = np.cross(index1 - pinky1, middle1 - wrist)
    palm_normal /= np.linalg.norm(palm_normal) + 1e-12
    offset = float(np.dot(thumb1 - wrist, palm_normal))
    if abs(offset) < 2e-3:  # thumb base within 2 mm of the palm plane: no verdict
        return None
    return "right" if offset > 0 else "left"


def load_mano_file(path: str | os.PathLike, side: str | None = None) -> ManoModelData:
    """Load one MANO model file (original chumpy pickle or chumpy-free copy). `side` ("right"/"left") is checked."""
    path = Path(path)
    data = _read_pickle(path)
    required = ("v_template", "f", "J_regressor", "kintree_table", "weights", "shapedirs", "posedirs",
                "hands_components", "hands_mean")
    missing = [key for key in required if key not in data]
    if missing:
        raise ManoFileError(f"{path} lacks the MANO keys {missing}; found keys {sorted(map(str, data))}. "
                            f"{HOW_TO_GET_MANO}")
    arrays = {key: _to_numpy(data[key], key, path) for key in required}
    v_template = _check_shape(arrays["v_template"].astype(np.float64), (NUM_VERTICES, 3), "v_template", path)
    faces = _check_shape(arrays["f"].astype(np.int64), (NUM_FACES, 3), "f", path)
    J_regressor = _check_regressor(arrays["J_regressor"].astype(np.float64), path)
    parents = arrays["kintree_table"][0].astype(np.int64)
    parents[0] = -1
    if tuple(parents) != MANO_PARENTS:
        raise ManoFileError(f"{path}: kinematic tree parents {parents.tolist()}, expected MANO's {list(MANO_PARENTS)}.")
    shapedirs = arrays["shapedirs"].astype(np.float64)
    if shapedirs.ndim != 3 or shapedirs.shape[:2] != (NUM_VERTICES, 3) or shapedirs.shape[2] < NUM_BETAS:
        raise ManoFileError(f"{path}: 'shapedirs' has shape {shapedirs.shape}, expected (778, 3, >=10).")
    model = ManoModelData(
        v_template=v_template,
        faces=faces,
        J_regressor=J_regressor,
        parents=parents,
        weights=_check_shape(arrays["weights"].astype(np.float64), (NUM_VERTICES, NUM_MANO_JOINTS), "weights", path),
        shapedirs=shapedirs[:, :, :NUM_BETAS],
        posedirs=_check_shape(arrays["posedirs"].astype(np.float64), (NUM_VERTICES, 3, 135), "posedirs", path),
        hands_components=_check_shape(arrays["hands_components"].astype(np.float64), (45, 45), "hands_components",
                                      path),
        hands_mean=_check_shape(arrays["hands_mean"].astype(np.float64).reshape(-1), (45,), "hands_mean", path),
        hands_coeffs=_optional_coefficients(data.get("hands_coeffs"), path),
        side=side or detect_side(v_template, J_regressor) or _side_from_name(path) or "right",
        path=path,
        is_standin=STANDIN_KEY in data,
        standin_version=_standin_version(data),
    )
    found = detect_side(v_template, J_regressor)
    if side is not None and found is not None and found != side:
        raise ManoFileError(
            f"{path} holds a {found} hand, but a {side} hand was asked for: expected {FILE_NAMES[side]}. "
            f"Put MANO's {FILE_NAMES[side]} there (files may have been renamed)."
        )
    return model


def _optional_coefficients(value, path: Path) -> np.ndarray | None:
    if value is None:
        return None
    coefficients = _to_numpy(value, "hands_coeffs", path).astype(np.float64)
    return coefficients.reshape(-1, coefficients.shape[-1]) if coefficients.ndim >= 1 and coefficients.size else None


def _side_from_name(path: Path) -> str | None:
    name = path.name.upper()
    return "left" if "LEFT" in name else "right" if "RIGHT" in name else None


@dataclass(frozen=True)
class ManoSource:
    """Where the hand model comes from, as decided by `locate_mano_dir`."""

    directory: Path
    is_standin: bool
    reason: str  # how it was chosen, for messages

    def describe(self, verbose: bool | None = None) -> str:
        """One line; with `verbose` (default: $HANDMESH_VERBOSE is 1) a stand-in's line adds how to get MANO."""
        verbose = os.environ.get(VERBOSE_ENV) == "1" if verbose is None else verbose
        kind = "the handmesh STAND-IN hand model (not MANO: results are illustrative)" if self.is_standin else "MANO"
        line = f"hand model: {kind} from {self.directory.absolute()} ({self.reason})"
        if not self.is_standin:
            return line
        return f"{line}. {HOW_TO_GET_MANO}" if verbose else f"{line}; -v says how to get MANO"


def _standin_version_of(path: Path) -> int | None:
    """The stand-in version of the model file at `path` (None for MANO), without a full load."""
    return _standin_version(_read_pickle(path))


def _standin_is_current(directory: Path) -> tuple[bool, str]:
    """Whether `directory` holds both stand-in files of this handmesh's STANDIN_VERSION, and if not, why."""
    if not all((directory / FILE_NAMES[side]).is_file() for side in FILE_NAMES):
        return False, "absent"
    try:
        versions = {_standin_version_of(directory / FILE_NAMES[side]) for side in FILE_NAMES}
    except ManoFileError:
        return False, "unreadable"
    if None in versions:
        raise ManoFileError(f"{directory} is where handmesh writes its stand-in hand model, but it holds model files "
                            f"without the stand-in's marker (MANO?). Move MANO's files to {DEFAULT_MANO_DIR}/ "
                            f"(or pass --mano-dir) and leave {directory} to handmesh.")
    if versions != {STANDIN_VERSION}:
        found = ", ".join(str(v) for v in sorted(versions, key=str))
        return False, f"written by another handmesh (stand-in version {found}, this one writes {STANDIN_VERSION})"
    return True, "current"


def _same_folder(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def _checked_source(directory: Path, standin: Path, reason: str) -> tuple[ManoSource, str | None]:
    """The source in `directory` (which holds MANO_RIGHT.pkl), refusing an outdated stand-in there unless it is
    `standin`, handmesh's own folder, which is then reported as needing to be written."""
    version = _standin_version_of(directory / FILE_NAMES["right"])
    if version is not None and version != STANDIN_VERSION:
        if not _same_folder(directory, standin):
            raise ManoFileError(
                f"{directory} ({reason}) holds a stand-in hand model written by another handmesh (stand-in version "
                f"{version}); this handmesh uses version {STANDIN_VERSION}. Run `handmesh standin --out {directory}` "
                f"to renew it, or use MANO there."
            )
        return ManoSource(directory, True, reason), _standin_is_current(directory)[1]
    return ManoSource(directory, version is not None, reason), None


def locate_mano_dir(
    mano_dir: str | os.PathLike | None = None,
    default_dir: str | os.PathLike = DEFAULT_MANO_DIR,
    standin_dir: str | os.PathLike = DEFAULT_STANDIN_DIR,
) -> tuple[ManoSource, str | None]:
    """Where the hand model is, or would be: (source, None) when its files are ready; (the stand-in's source in
    `standin_dir`, why it must be written first: "absent", "unreadable" or "written by another handmesh ...") when
    no MANO is found and that folder holds no current stand-in. Reads files, writes none (`resolve_mano_dir`)."""
    explicit, reason = (mano_dir, "--mano-dir") if mano_dir else (os.environ.get(MANO_DIR_ENV), f"${MANO_DIR_ENV}")
    standin = Path(standin_dir)
    if explicit:
        directory = _models_folder(Path(explicit))
        if not (directory / FILE_NAMES["right"]).is_file():
            raise ManoFileError(
                f"no {FILE_NAMES['right']} in {directory} (given by {reason}): expected the MANO model files there. "
                f"{HOW_TO_GET_MANO}"
            )
        return _checked_source(directory, standin, reason)
    directory = _models_folder(Path(default_dir))
    if (directory / FILE_NAMES["right"]).is_file():
        return _checked_source(directory, standin, "found in the default folder")
    current, why = _standin_is_current(standin)
    return ManoSource(standin, True, f"no MANO in {directory.absolute()}"), None if current else why


def resolve_mano_dir(
    mano_dir: str | os.PathLike | None = None,
    default_dir: str | os.PathLike = DEFAULT_MANO_DIR,
    standin_dir: str | os.PathLike = DEFAULT_STANDIN_DIR,
) -> ManoSource:
    """Find the MANO folder: `mano_dir`, else $HANDMESH_MANO_DIR, else `default_dir`, else the stand-in written in
    `standin_dir`. Writes nothing: `handmesh standin` (or `handmesh.standin.ensure_standin`) writes the stand-in.

    An explicit folder (argument or environment) must hold MANO_RIGHT.pkl: a wrong path is an error, never a silent
    fallback. A stand-in written by another handmesh (another STANDIN_VERSION) is an error too. Accepts the folder
    of the files, or the unpacked `mano_v1_2` folder (its `models/`).
    """
    source, missing = locate_mano_dir(mano_dir, default_dir, standin_dir)
    if missing is not None:
        raise ManoFileError(
            f"no MANO found ({source.reason}) and no usable stand-in in {source.directory.absolute()} ({missing}): "
            f"expected MANO_RIGHT.pkl in one of them. Run `handmesh standin` to write the stand-in there, or pass "
            f"mano_dir (--mano-dir, ${MANO_DIR_ENV}) naming MANO's folder. {HOW_TO_GET_MANO}"
        )
    return source


def _models_folder(directory: Path) -> Path:
    for candidate in (directory, directory / "models", directory / "mano_v1_2" / "models"):
        if (candidate / FILE_NAMES["right"]).is_file():
            return candidate
    return directory
