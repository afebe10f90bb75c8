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

from handmesh.errors import ManoFileError
from handmesh.joints import MANO_PARENTS, NUM_BETAS, NUM_FACES, NUM_MANO_JOINTS, NUM_VERTICES

DEFAULT_MANO_DIR = Path("data/mano")  # where users put mano_v1_2/models/MANO_*.pkl (or its contents)
DEFAULT_STANDIN_DIR = Path("data/mano_standin")  # where the stand-in is written when no MANO is found
MANO_DIR_ENV = "HANDMESH_MANO_DIR"
STANDIN_KEY = "handmesh_standin"  # extra key that marks the stand-in model's files
FILE_NAMES = {"right": "MANO_RIGHT.pkl", "left": "MANO_LEFT.pkl"}
HOW_TO_GET_MANO = (
    "Download MANO from https://mano.is.tue.mpg.de (free registration), unpack it and copy "
    "mano_v1_2/models/MANO_RIGHT.pkl and MANO_LEFT.pkl into data/mano/ (or pass --mano-dir / set HANDMESH_MANO_DIR). "
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
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError, UnicodeDecodeError) as error:
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
        raise ManoFileError(f"{path} lacks the MANO keys {missing}; found keys {sorted(map(str, data))}. {HOW_TO_GET_MANO}")
    arrays = {key: _to_numpy(data[key], key, path) for key in required}
    v_template = _check_shape(arrays["v_template"].astype(np.float64), (NUM_VERTICES, 3), "v_template", path)
    faces = _check_shape(arrays["f"].astype(np.int64), (NUM_FACES, 3), "f", path)
    J_regressor = _check_shape(arrays["J_regressor"].astype(np.float64), (NUM_MANO_JOINTS, NUM_VERTICES), "J_regressor", path)
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
        hands_components=_check_shape(arrays["hands_components"].astype(np.float64), (45, 45), "hands_components", path),
        hands_mean=_check_shape(arrays["hands_mean"].astype(np.float64).reshape(-1), (45,), "hands_mean", path),
        hands_coeffs=_optional_coefficients(data.get("hands_coeffs"), path),
        side=side or detect_side(v_template, J_regressor) or _side_from_name(path) or "right",
        path=path,
        is_standin=STANDIN_KEY in data,
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
    """Where the hand model comes from, as decided by `resolve_mano_dir`."""

    directory: Path
    is_standin: bool
    reason: str  # how it was chosen, for messages

    def describe(self) -> str:
        kind = "the handmesh STAND-IN hand model (not MANO: results are illustrative)" if self.is_standin else "MANO"
        return f"hand model: {kind} from {self.directory} ({self.reason})"


def _is_standin_file(path: Path) -> bool:
    """Cheap check for the stand-in marker without a full load."""
    return STANDIN_KEY in _read_pickle(path)


def resolve_mano_dir(
    mano_dir: str | os.PathLike | None = None,
    default_dir: str | os.PathLike = DEFAULT_MANO_DIR,
    standin_dir: str | os.PathLike = DEFAULT_STANDIN_DIR,
) -> ManoSource:
    """Find the MANO folder: `mano_dir`, else $HANDMESH_MANO_DIR, else `default_dir`, else the stand-in.

    An explicit folder (argument or environment) must hold MANO_RIGHT.pkl: a wrong path is an error, never a silent
    fallback. With no explicit folder and no MANO in `default_dir`, the stand-in is written to `standin_dir` if absent.
    Accepts the folder of the files, or the unpacked `mano_v1_2` folder (its `models/` is looked in).
    """
    explicit, reason = (mano_dir, "--mano-dir") if mano_dir else (os.environ.get(MANO_DIR_ENV), f"${MANO_DIR_ENV}")
    if explicit:
        directory = _models_folder(Path(explicit))
        if not (directory / FILE_NAMES["right"]).is_file():
            raise ManoFileError(
                f"no {FILE_NAMES['right']} in {directory} (given by {reason}): expected the MANO model files there. "
                f"{HOW_TO_GET_MANO}"
            )
        return ManoSource(directory, _is_standin_file(directory / FILE_NAMES["right"]), reason)
    directory = _models_folder(Path(default_dir))
    if (directory / FILE_NAMES["right"]).is_file():
        return ManoSource(directory, _is_standin_file(directory / FILE_NAMES["right"]), "found in the default folder")
    standin = Path(standin_dir)
    if not (standin / FILE_NAMES["right"]).is_file() or not (standin / FILE_NAMES["left"]).is_file():
        from handmesh.standin import write_standin  # only when needed: building the stand-in takes a moment

        write_standin(standin)
    return ManoSource(standin, True, f"no MANO in {directory}; {HOW_TO_GET_MANO}")


def _models_folder(directory: Path) -> Path:
    for candidate in (directory, directory / "models", directory / "mano_v1_2" / "models"):
        if (candidate / FILE_NAMES["right"]).is_file():
            return candidate
    return directory
