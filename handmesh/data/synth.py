"""A synthetic dataset in FreiHAND's exact layout, rendered from any MANO-format hand model (real MANO or the stand-in).

Each sample: finger pose from the model's PCA space (hands_mean + the first `n_components` of hands_components, spread
like the model's own `hands_coeffs` when the file has them), a global rotation (palm or back toward the camera, tilted,
any in-plane roll), shape betas ~ N(0, 1) clipped, FreiHAND-like intrinsics, and the hand centred so that it spans
40-70% of the image. Annotations are FreiHAND's: `*_mano.json` holds 48 pose values (axis-angle relative to hands_mean),
10 betas, uv_root (keypoint 9 projected) and scale = f / z9; the stored vertices and keypoints are exactly what the
official decoding of those 61 values gives (`decode_mano`), and the images are rendered from those vertices.

Writing is all-or-nothing: everything goes to `<out>.partial/`, which becomes `<out>` (with `handmesh_synth.json`)
only when complete; an interrupted run leaves only `.partial`, which the next run removes and redoes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import orjson
import torch

from handmesh.atomic import replace_path
from handmesh.data.synth_jobs import IMAGE_SIZE, NUM_VERSIONS, default_workers, render_jobs, sample_rng, split_jobs
from handmesh.errors import DataError
from handmesh.joints import MIDDLE_MCP_KEYPOINT, NUM_BETAS
from handmesh.mano import ManoLayer
from handmesh.mano_file import FILE_NAMES, load_mano_file, resolve_mano_dir
from handmesh.poses import rest_frame
from handmesh.progress import progress_bar

SYNTH_FORMAT_VERSION = 3  # bump when the generated data changes, so existing folders are regenerated
MARKER = "handmesh_synth.json"  # written last: its presence means the folder is complete
PARTIAL_TAG = ".handmesh_synth_partial"  # marks a folder as ours while it is being written
N_COMPONENTS = 12  # PCA components of finger pose that vary
DEFAULT_COMPONENT_STD = 1.0  # coefficient spread when the model file has no `hands_coeffs`
FOCAL_RANGE = (500.0, 700.0)  # pixels at 224x224
FILL_RANGE = (0.4, 0.7)  # share of the image side the hand's bounding box spans
REFERENCE_BONE = (9, 10)  # FreiHAND's scale bone: middle MCP -> middle PIP
_BATCH = 64  # samples decoded through MANO at once


@dataclass(frozen=True)
class SynthResult:
    root: Path
    n_train: int
    n_eval: int
    seconds: float  # generation time (0 when an existing complete folder was reused)
    samples_per_s: float
    hand_model: str  # ManoSource.describe()
    reused: bool  # True when `root` already held this exact dataset


def component_spread(mano_file: Path, n_components: int) -> np.ndarray:
    """(n_components,) std of each PCA coefficient, from the file's `hands_coeffs` (example poses) when present."""
    coefficients = load_mano_file(mano_file).hands_coeffs  # (num_examples, 45) or None
    if coefficients is None:
        return np.full(n_components, DEFAULT_COMPONENT_STD)
    return coefficients[:, :n_components].std(axis=0)


def _axis_rotation(axis: int, angle: float) -> np.ndarray:
    rotation, _ = cv2.Rodrigues(np.eye(3)[axis] * angle)
    return rotation


@dataclass(frozen=True)
class ViewRange:
    """How the synthetic hands face the camera. The defaults cover FreiHAND's views; narrower ranges make an easier
    set (the quick start uses one: a from-scratch network learns finger articulation sooner when the hand is seen
    upright and from the palm side more often)."""

    back_fraction: float = 0.5  # share of samples showing the back of the hand
    max_roll_deg: float = 180.0  # in-plane roll drawn uniformly from [-max, max] degrees (180: any angle)

    def __post_init__(self):
        if not (0.0 <= self.back_fraction <= 1.0 and 0.0 <= self.max_roll_deg <= 180.0):
            raise DataError(f"view range back_fraction={self.back_fraction}, max_roll_deg={self.max_roll_deg}: "
                            "expected a fraction in [0, 1] and an angle in [0, 180] degrees; pass --back-fraction and "
                            "--max-roll within those ranges.")


def sample_global_rotation(rng: np.random.Generator, canonical: np.ndarray,
                           views: ViewRange = ViewRange()) -> np.ndarray:
    """(3, 3) model -> camera rotation. `canonical` turns the model's palm toward the camera with fingers up; then the
    back is shown for `views.back_fraction` of the samples, the hand tilts (pitch ~ N(0, 25 deg), yaw ~ N(0, 35 deg),
    clipped) and rolls in the image plane within `views.max_roll_deg`. (Larger pitches point the forearm at the
    camera, hiding the hand behind it.)"""
    flip = _axis_rotation(1, np.pi) if rng.random() < views.back_fraction else np.eye(3)
    pitch = _axis_rotation(0, np.deg2rad(np.clip(rng.normal(0, 25), -60, 60)))
    yaw = _axis_rotation(1, np.deg2rad(np.clip(rng.normal(0, 35), -80, 80)))
    roll = _axis_rotation(2, np.deg2rad(rng.uniform(-views.max_roll_deg, views.max_roll_deg)))
    return roll @ pitch @ yaw @ flip @ canonical


def canonical_rotation(layer: ManoLayer) -> np.ndarray:
    """(3, 3) rotation taking the model frame to a camera view with the palm toward the camera and fingers up."""
    _, fingers, normal = rest_frame(layer)
    model_axes = np.stack([fingers, normal, np.cross(fingers, normal)], axis=1)
    up, toward_camera = np.array([0.0, -1.0, 0.0]), np.array([0.0, 0.0, -1.0])
    camera_axes = np.stack([up, toward_camera, np.cross(up, toward_camera)], axis=1)
    return camera_axes @ model_axes.T


def root_from_uv_scale(uv: np.ndarray, scale: np.ndarray, K: np.ndarray) -> np.ndarray:
    """FreiHAND's `recover_root`: uv (B, 2) px, scale (B,), K (B, 3, 3) -> (B, 3) camera-frame position of keypoint 9,
    metres: [(u - cx), (v - cy), f] / scale with f = (fx + fy) / 2."""
    focal = (K[:, 0, 0] + K[:, 1, 1])[:, None] / 2  # (B, 1)
    return np.concatenate([uv - K[:, :2, 2], focal], axis=1) / np.reshape(scale, (-1, 1))


def uv_scale_from_root(root: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of `root_from_uv_scale`: root (B, 3) metres, K (B, 3, 3) -> uv (B, 2) px, scale (B,) = f / z.
    uv is keypoint 9 projected with the focal f = (fx + fy) / 2 (its projection with K when fx = fy)."""
    focal = (K[:, 0, 0] + K[:, 1, 1]) / 2  # (B,)
    return root[:, :2] / root[:, 2:] * focal[:, None] + K[:, :2, 2], focal / root[:, 2]


def decode_mano(layer: ManoLayer, mano: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FreiHAND's decoding of `*_mano.json` (its toolbox's `pose_by_root`): mano (B, 61), K (B, 3, 3) -> vertices
    (B, 778, 3), keypoints (B, 21, 3), metres, camera frame, float64.

    Pose the mesh (48 axis-angle values relative to hands_mean, 10 betas), take keypoint 9 (middle MCP) of the posed
    mesh (`ManoLayer`'s keypoints: J_regressor @ posed vertices), and translate mesh and keypoints so that keypoint 9
    lands at `root_from_uv_scale(uv_root, scale, K)`."""
    mano = np.asarray(mano, dtype=np.float64)
    output = layer(layer.pose_from_axis_angle(torch.as_tensor(mano[:, :48]), add_hands_mean=True),
                   torch.as_tensor(mano[:, 48 : 48 + NUM_BETAS]))
    vertices, keypoints = output.vertices.numpy(), output.keypoints.numpy()  # (B, 778, 3), (B, 21, 3) model frame
    root = root_from_uv_scale(mano[:, 58:60], mano[:, 60], np.asarray(K, dtype=np.float64))  # (B, 3)
    offset = (root - keypoints[:, MIDDLE_MCP_KEYPOINT])[:, None]  # (B, 1, 3)
    return vertices + offset, keypoints + offset


def place_hand(relative: np.ndarray, K: np.ndarray, fill: float, centre: np.ndarray, size: int) -> np.ndarray:
    """Camera-frame position (3,) of keypoint 9 so that vertices `relative` (778, 3) (relative to keypoint 9) project
    to a bounding box of side `fill` x size centred at `centre` (2,) pixels. A few fixed-point steps (perspective)."""
    focal = K[0, 0]
    extent = np.max(relative.max(0)[:2] - relative.min(0)[:2])
    position = np.array([0.0, 0.0, focal * extent / (fill * size)])
    for _ in range(4):
        points = relative + position
        uv = points[:, :2] / points[:, 2:] * focal + K[:2, 2]
        low, high = uv.min(0), uv.max(0)
        position[2] *= np.max(high - low) / (fill * size)
        position[:2] += (centre - (low + high) / 2) * position[2] / focal
    return position


def _sample_pose(rng: np.random.Generator, layer: ManoLayer, canonical: np.ndarray, spread: np.ndarray,
                 views: ViewRange) -> tuple:
    """One sample's (pose48 relative to hands_mean, betas (10,), K (3, 3), fill, centre (2,))."""
    coefficients = np.clip(rng.normal(0, spread), -2 * spread, 2 * spread)  # (n_components,)
    fingers = coefficients @ layer.hands_components[: len(spread)].double().numpy()  # (45,)
    rotation = sample_global_rotation(rng, canonical, views)
    global_orient = cv2.Rodrigues(rotation)[0].reshape(3)
    betas = np.clip(rng.normal(0, 1, NUM_BETAS), -2.5, 2.5)
    focal = rng.uniform(*FOCAL_RANGE)
    K = np.array([[focal, 0, IMAGE_SIZE / 2 + rng.normal(0, 2)],
                  [0, focal, IMAGE_SIZE / 2 + rng.normal(0, 2)],
                  [0, 0, 1]])
    fill = rng.uniform(*FILL_RANGE)
    centre = (IMAGE_SIZE - 1) / 2 + rng.normal(0, 0.03 * IMAGE_SIZE, 2)
    return np.concatenate([global_orient, fingers]), betas, K, fill, centre


def _annotate_batch(layer: ManoLayer, rngs: list, canonical: np.ndarray, spread: np.ndarray,
                    views: ViewRange) -> dict[str, np.ndarray]:
    """Samples parameters and returns the batch's FreiHAND annotations: K, mano (B, 61), xyz, verts, scale."""
    samples = [_sample_pose(rng, layer, canonical, spread, views) for rng in rngs]
    pose = np.stack([s[0] for s in samples])
    betas = np.stack([s[1] for s in samples])
    K = np.stack([s[2] for s in samples])
    with torch.no_grad():
        output = layer(layer.pose_from_axis_angle(torch.as_tensor(pose), add_hands_mean=True), torch.as_tensor(betas))
    vertices, keypoints = output.vertices.numpy(), output.keypoints.numpy()
    relative = vertices - keypoints[:, MIDDLE_MCP_KEYPOINT, None]  # (B, 778, 3) around keypoint 9 of the posed mesh
    root = np.stack([place_hand(relative[b], K[b], *sample[3:], IMAGE_SIZE)  # (B, 3)
                     for b, sample in enumerate(samples)])
    uv_root, root_scale = uv_scale_from_root(root, K)  # decode_mano puts keypoint 9 back at `root`
    mano = np.concatenate([pose, betas, uv_root, root_scale[:, None]], axis=1)  # (B, 61)
    with torch.no_grad():
        verts, xyz = decode_mano(layer, mano, K)
    scale = np.linalg.norm(xyz[:, REFERENCE_BONE[0]] - xyz[:, REFERENCE_BONE[1]], axis=1)
    return {"K": K, "mano": mano[:, None, :], "xyz": xyz, "verts": verts, "scale": scale}


@dataclass(frozen=True)
class _HandModel:
    """What sampling the annotations needs from the hand model, computed once."""

    layer: ManoLayer
    canonical: np.ndarray  # (3, 3) palm-to-camera rotation
    spread: np.ndarray  # (N_COMPONENTS,) PCA coefficient std

    @classmethod
    def load(cls, directory: Path) -> "_HandModel":
        layer = ManoLayer.from_dir(directory, "right")
        return cls(layer, canonical_rotation(layer), component_spread(directory / FILE_NAMES["right"], N_COMPONENTS))


def _annotate_split(model: _HandModel, split: str, count: int, seed: int, views: ViewRange) -> dict[str, np.ndarray]:
    """The whole split's FreiHAND annotations (K, mano, xyz, verts, scale), decoded through MANO in batches."""
    parts = [_annotate_batch(model.layer,
                             [sample_rng(seed, split, i, 0) for i in range(start, min(count, start + _BATCH))],
                             model.canonical, model.spread, views) for start in range(0, count, _BATCH)]
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def _read_marker(folder: Path) -> dict | None:
    try:
        return orjson.loads((folder / MARKER).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None


_WHY_STALE = {  # marker key -> what a difference there means, for the message when a folder is regenerated
    "format_version": "written by another handmesh (synthetic data format {found}, this one writes {wanted})",
    "standin_version": "made with another stand-in hand model (stand-in version {found}, now {wanted})",
    "hand_model_sha1": "made with another hand model file",
}


def _stale_reason(existing: dict, settings: dict) -> str | None:
    """Why a folder with marker `existing` is not the dataset `settings` asks for (None: it is)."""
    for key, message in _WHY_STALE.items():
        if existing.get(key) != settings[key]:
            return message.format(found=existing.get(key, "unrecorded"), wanted=settings[key])
    changed = sorted(key for key, value in settings.items() if existing.get(key) != value)
    return f"made with other settings ({', '.join(changed)})" if changed else None


def _readme(info: dict) -> str:
    warning = ("made with the STAND-IN hand model, not MANO: shapes and poses are illustrative" if info["is_standin"]
               else "made with MANO")
    return (
        "SYNTHETIC data in FreiHAND_pub_v2's layout, rendered by `handmesh synth` - not FreiHAND.\n"
        f"Hand model: {info['hand_model']} ({warning}).\n"
        f"Samples: {info['n_train']} training (x{NUM_VERSIONS} colour versions), {info['n_eval']} evaluation; "
        f"seed {info['seed']}; {info['image_size']}x{info['image_size']} JPEG.\n"
        "Numbers measured on this data are not FreiHAND results. Settings: handmesh_synth.json.\n"
    )


def synthesize(
    mano_dir: str | os.PathLike | None,
    out: str | os.PathLike,
    n_train: int,
    n_eval: int,
    seed: int = 0,
    views: ViewRange = ViewRange(),
    workers: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> SynthResult:
    """Writes (or reuses, when already complete with the same settings) a synthetic FreiHAND-format folder at `out`.

    mano_dir: a MANO folder, or None to resolve it (`resolve_mano_dir`: $HANDMESH_MANO_DIR, data/mano, the stand-in).
    views: the range of views (default: FreiHAND's). workers: rendering processes (default: one per core for large
    sets); the data do not depend on it.
    """
    if n_train < 1 or n_eval < 1:
        raise DataError(f"asked for {n_train} training and {n_eval} evaluation samples; expected at least 1 of each.")
    log = log or (lambda message: None)
    source = resolve_mano_dir(mano_dir)
    log(source.describe())
    model_file = source.directory / FILE_NAMES["right"]
    settings = {
        "format_version": SYNTH_FORMAT_VERSION, "seed": int(seed), "n_train": int(n_train), "n_eval": int(n_eval),
        "image_size": IMAGE_SIZE, "hand_model_sha1": hashlib.sha1(model_file.read_bytes()).hexdigest(),
        "standin_version": load_mano_file(model_file).standin_version, "views": dataclasses.asdict(views),
    }
    out = Path(out)
    existing = _read_marker(out)
    if existing is not None:
        stale = _stale_reason(existing, settings)
        if stale is None:
            log(f"{out} already holds this synthetic dataset (seed {seed}, {n_train} + {n_eval} samples); reusing it.")
            return SynthResult(out, n_train, n_eval, 0.0, 0.0, source.describe(), reused=True)
        log(f"regenerating {out}: the synthetic dataset there was {stale}")
    if out.exists() and existing is None and (not out.is_dir() or any(out.iterdir())):
        raise DataError(
            f"{out} exists and was not written by `handmesh synth` (no {MARKER}); refusing to replace it. "
            "Choose another --out or remove that folder."
        )
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        if not (partial / PARTIAL_TAG).exists():
            raise DataError(f"{partial} exists but is not an interrupted `handmesh synth` run; "
                            "remove it or choose another --out.")
        log(f"removing {partial}, left by an interrupted run")
        shutil.rmtree(partial)
    try:
        partial.mkdir(parents=True)
        (partial / PARTIAL_TAG).touch()
    except OSError as error:
        raise DataError(f"cannot create {partial} ({error}); expected a writable place for --out.") from None
    model = _HandModel.load(source.directory)
    started = time.perf_counter()
    jobs = []
    for split, count in (("training", n_train), ("evaluation", n_eval)):
        annotations = _annotate_split(model, split, count, seed, views)
        for key, values in annotations.items():
            (partial / f"{split}_{key}.json").write_bytes(orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY))
        (partial / split / "rgb").mkdir(parents=True)
        if split == "training":
            (partial / split / "mask").mkdir(parents=True)
        jobs += split_jobs(partial, split, annotations, seed)
    with progress_bar(total=n_train + n_eval, desc="synth", unit="sample", disable=not progress) as bar:
        render_jobs(jobs, source.directory, workers or default_workers(n_train + n_eval), bar)
    seconds = time.perf_counter() - started
    info = {**settings, "synthetic": True, "generator": "handmesh synth", "is_standin": source.is_standin,
            "hand_model": model.layer.source, "seconds": round(seconds, 2),
            "samples_per_s": round((n_train + n_eval) / seconds, 3)}
    (partial / "README.txt").write_bytes(_readme(info).encode())
    (partial / MARKER).write_bytes(orjson.dumps(info, option=orjson.OPT_INDENT_2))
    (partial / PARTIAL_TAG).unlink()
    replace_path(partial, out)  # our own older dataset (or an empty folder) there is swapped out, then deleted
    log(f"wrote {out}: {n_train} x {NUM_VERSIONS} training and {n_eval} evaluation images in {seconds:.1f} s "
        f"({info['samples_per_s']:.2f} samples/s)")
    return SynthResult(out, n_train, n_eval, seconds, info["samples_per_s"], source.describe(), reused=False)
