"""FreiHAND_pub_v2 as users unpack it (or as `handmesh synth` writes it): a torch Dataset of crops and labels.

Layout (see docs/data.md): `<root>/{training,evaluation}/rgb/%08d.jpg`, `<root>/training/mask/%08d.jpg` and
`<root>/<split>_{K,xyz,verts,mano,scale}.json`. Training image `i` shows unique sample `i % N` (N = entries in
`training_xyz.json`) in version `i // N` (four versions in FreiHAND). Annotations are read through memory-mapped caches
(`annotations.py`), so starting up and every DataLoader worker costs almost nothing after the first conversion.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from handmesh.data.annotations import load_annotation
from handmesh.data.batch import BatchItems, allocate, share
from handmesh.data.transforms import (
    NUM_DRAWS,
    Augmentation,
    AugmentationDraws,
    CropGeometry,
    crop_geometry,
    draw_augmentation,
    occlude,
    photometric,
    project,
    rotate_global_orient,
    rotate_points,
    to_chw,
    warp_image,
)
from handmesh.errors import DataError
from handmesh.joints import NUM_BETAS, NUM_KEYPOINTS, NUM_POSE_PARAMS, NUM_VERTICES

SPLITS = ("training", "evaluation")
SUBSETS = ("all", "train", "val")
BAD_IMAGE_MODES = ("raise", "skip")
VAL_SPLIT_SEED = 20240101  # fixes which unique samples are held out for validation, for every run and machine
NUM_MANO_VALUES = NUM_POSE_PARAMS + NUM_BETAS + 3  # 48 pose, 10 shape, uv_root (2), scale (1)
ENTRY_SHAPES = {"K": (3, 3), "xyz": (NUM_KEYPOINTS, 3), "verts": (NUM_VERTICES, 3), "mano": (NUM_MANO_VALUES,)}
REQUIRED = ("K", "xyz", "verts")  # `mano` is optional: without it items have has_mano False and zero parameters
IMAGE_ONLY = ("K",)  # what cropping an image needs: a split read with labels=False (e.g. for predictions)
_MAX_SKIPS = 20  # consecutive unreadable images tolerated in "skip" mode before giving up
_PCG_INCREMENT = 0xDA3E39CB94B95BDB  # odd constant picking the PCG64 stream; each item's state comes from torch


@dataclass(frozen=True)
class SplitFiles:
    """Where one split's files are, and how many there are."""

    rgb_dir: Path
    jsons: dict[str, Path]  # "K" / "xyz" / "verts" / "mano" -> path (mano only when present)
    num_images: int  # JPEGs in rgb_dir
    num_unique: int  # annotation entries


def image_name(index: int) -> str:
    """FreiHAND's image file name: `%08d.jpg`."""
    return f"{index:08d}.jpg"


def image_path(root: str | os.PathLike, split: str, index: int) -> Path:
    """`<root>/<split>/rgb/%08d.jpg`."""
    return Path(root) / split / "rgb" / image_name(index)


def mask_path(root: str | os.PathLike, sample_id: int) -> Path:
    """`<root>/training/mask/%08d.jpg` (masks exist for the unique training samples only)."""
    return Path(root) / "training" / "mask" / f"{sample_id:08d}.jpg"


def validation_ids(num_unique: int, val_fraction: float) -> np.ndarray:
    """Sorted unique sample ids held out for validation: a fixed random permutation's first share (so a larger
    fraction holds out a superset). At least one sample on each side when 0 < val_fraction < 1."""
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction is {val_fraction}, expected a share in [0, 1); "
                        "e.g. 0.05 holds out 5% of samples.")
    if val_fraction == 0.0 or num_unique < 2:
        return np.zeros(0, dtype=np.int64)
    count = min(max(1, round(num_unique * val_fraction)), num_unique - 1)
    order = np.random.default_rng(VAL_SPLIT_SEED).permutation(num_unique)
    return np.sort(order[:count]).astype(np.int64)


def _count_images(rgb_dir: Path) -> int:
    with os.scandir(rgb_dir) as entries:
        return sum(1 for entry in entries if entry.name.endswith(".jpg"))


def find_split(root: str | os.PathLike, split: str, cache_dir: str | os.PathLike | None = None, progress: bool = True,
               labels: bool = True) -> tuple[SplitFiles, dict[str, np.ndarray]]:
    """Checks the layout of one split and loads its annotations (memory-mapped). Raises DataError on any mismatch.
    labels=False: only `<split>_K.json` is needed and read; ground-truth files are ignored, present or not."""
    root = Path(root)
    if split not in SPLITS:
        raise DataError(f"split {split!r} is not one of {SPLITS}.")
    if not root.is_dir():
        raise DataError(
            f"no dataset folder at {root}: expected FreiHAND_pub_v2 unpacked there (training/, evaluation/, *.json). "
            "See data/README.md, or make a synthetic one with `handmesh synth --out DIR`."
        )
    rgb_dir = root / split / "rgb"
    if not rgb_dir.is_dir():
        raise DataError(
            f"no image folder {rgb_dir}: expected FreiHAND's {split}/rgb/ with %08d.jpg images under {root}. "
            "Is ROOT the FreiHAND_pub_v2 folder itself (not its parent)?"
        )
    required = REQUIRED if labels else IMAGE_ONLY
    jsons = {key: root / f"{split}_{key}.json" for key in (ENTRY_SHAPES if labels else IMAGE_ONLY)}
    missing = [path.name for key, path in jsons.items() if key in required and not path.is_file()]
    if missing:
        raise DataError(
            f"{root} lacks {', '.join(missing)}: expected FreiHAND's annotation files next to {split}/"
            f"{'' if labels else ' (the camera intrinsics: predictions need them with the images)'}. "
            "Unpack FreiHAND_pub_v2 completely (or regenerate the synthetic set)."
        )
    jsons = {key: path for key, path in jsons.items() if key in required or path.is_file()}
    arrays = {key: load_annotation(path, ENTRY_SHAPES[key], cache_dir, progress) for key, path in jsons.items()}
    counts = {jsons[key].name: len(array) for key, array in arrays.items()}
    if len(set(counts.values())) != 1:
        raise DataError(
            f"annotation files of {root} disagree on the number of samples: {counts}; expected one entry per unique "
            "sample in each. A file may be truncated or from another release: re-download or regenerate them."
        )
    num_unique = len(arrays["K"])
    num_images = _count_images(rgb_dir)
    if num_images == 0 or num_images % num_unique or (split == "evaluation" and num_images != num_unique):
        expected = f"{num_unique}" if split == "evaluation" else f"a multiple of {num_unique} (one per version)"
        raise DataError(
            f"{rgb_dir} holds {num_images} JPEGs, expected {expected} for {num_unique} annotated samples. "
            "The images may be partly unpacked: unpack the archive again (or regenerate the synthetic set)."
        )
    return SplitFiles(rgb_dir=rgb_dir, jsons=jsons, num_images=num_images, num_unique=num_unique), arrays


class FreiHANDDataset(Dataset):
    """Items are dicts (docs/data.md, "Data batches"), in camera frame metres and crop pixels. Tensors:

    image (3, S, S) uint8 RGB, C-contiguous (the encoder scales and normalises it: `Encoder.forward`; uint8 keeps
    workers, collation and the copy between processes 4x lighter than float32); K (3, 3) crop intrinsics;
    keypoints_3d (21, 3); keypoints_2d (21, 2) = keypoints_3d projected with K; vertices (778, 3); mano_pose (48,)
    axis-angle relative to hands_mean; mano_shape (10,). Plain Python scalars (collated into (B,) bool / long
    tensors): has_mano, sample_id (i % N), version (i // N), index (the image's file number i).
    With labels=False only the images and `<split>_K.json` are read (what predictions need): keypoints_3d,
    keypoints_2d and vertices are NaN, mano_pose and mano_shape zero, has_mano False.
    A DataLoader's batch is built in one block of memory (`__getitems__`); give the DataLoader
    `collate_fn=handmesh.data.batch.collate_items` to hand that block over whole (the same batch dict, ~4x less
    hand-over work than `default_collate`'s 11 tensors).

    subset: "all" images, or the "train" / "val" share of the training split, held out by unique sample id (all
    versions of a sample on one side; see `validation_ids`). augment: an `Augmentation` for training, None for plain
    crops. on_bad_image: "raise" a DataError naming an unreadable JPEG, or "skip" it (warn, count in `skipped`, serve
    the next).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "training",
        input_size: int = 224,
        subset: str = "all",
        val_fraction: float = 0.05,
        augment: Augmentation | None = None,
        cache_dir: str | os.PathLike | None = None,
        on_bad_image: str = "raise",
        progress: bool = True,
        labels: bool = True,
    ):
        if subset not in SUBSETS:
            raise DataError(f"subset {subset!r} is not one of {SUBSETS}.")
        if subset != "all" and split != "training":
            raise DataError(f"subset {subset!r} splits the training set; the {split} split only has subset 'all'.")
        if on_bad_image not in BAD_IMAGE_MODES:
            raise DataError(f"on_bad_image is {on_bad_image!r}, expected one of {BAD_IMAGE_MODES}.")
        if augment is not None and not labels:
            raise DataError("augment needs the labels (the occluder is placed on the hand); pass labels=True.")
        if int(input_size) < 16:
            raise DataError(f"input_size is {input_size}, expected a crop side of at least 16 pixels (e.g. 224).")
        self.root = Path(root)
        self.split = split
        self.input_size = int(input_size)
        self.subset = subset
        self.augment = augment
        self.on_bad_image = on_bad_image
        self.files, arrays = find_split(self.root, split, cache_dir, progress, labels)
        self.cache_dir = cache_dir
        self._arrays: dict[str, np.ndarray] | None = {key: array.view(np.ndarray) for key, array in arrays.items()}
        self.num_unique = self.files.num_unique
        held_out = np.zeros(self.num_unique, dtype=bool)
        held_out[validation_ids(self.num_unique, val_fraction)] = True
        all_images = np.arange(self.files.num_images, dtype=np.int64)
        keep = {"all": np.ones_like(held_out), "train": ~held_out, "val": held_out}[subset]
        self.indices = all_images[keep[all_images % self.num_unique]]  # (len,) image file numbers
        self.skipped: list[str] = []  # unreadable images met in "skip" mode (per process)
        self._rng = np.random.Generator(np.random.PCG64(0))  # re-seeded for every augmented item (`_item_rng`)
        self._source_keypoints_2d: np.ndarray | None = None  # (N, 21, 2) px, made on first use
        self._worker_batches: dict[int, dict[str, torch.Tensor]] = {}  # batch size -> `_worker_batch`

    def __len__(self) -> int:
        return len(self.indices)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_arrays"] = None  # memory maps are reopened in each worker, never pickled (that would copy them)
        state["_source_keypoints_2d"] = None  # remade from them
        state["_worker_batches"] = {}
        return state

    @property
    def source_keypoints_2d(self) -> np.ndarray:
        """(N, 21, 2) every unique sample's keypoints projected into its source image, px; made once per process
        (~1 s per million samples) so that an item's crop needs one small product for them (the occluder's place)."""
        if self._source_keypoints_2d is None:
            self._source_keypoints_2d = project(self.arrays["xyz"], self.arrays["K"])
        return self._source_keypoints_2d

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            self._arrays = {
                key: load_annotation(path, ENTRY_SHAPES[key], self.cache_dir, progress=False).view(np.ndarray)
                for key, path in self.files.jsons.items()
            }  # plain ndarray views of the memory maps: indexing them skips np.memmap's per-slice overhead
        return self._arrays

    def __getitem__(self, position: int) -> dict[str, torch.Tensor | bool | int]:
        return self.__getitems__([position])[0]

    def __getitems__(self, positions: list[int]) -> BatchItems:
        """The items at `positions` built straight into one batch (`batch.allocate`; in a DataLoader worker a reused
        one, copied into shared memory at the end by `batch.share`): what a DataLoader calls with each batch's indices.
        `batch.collate_items` takes the batch as it is; `default_collate` the items one by one.

        Images are made one by one (decode, crop, augment, into the batch's planes); the augmentation draws of the
        whole batch first and its labels last, each in a few array operations (per-item numpy and torch calls cost
        microseconds each, and cost more between OpenCV calls, which leave the CPU's caches cold). Each item draws
        from its own seed, so an item's augmentation does not depend on the batch it is in."""
        in_worker = get_worker_info() is not None
        batch = self._worker_batch(len(positions)) if in_worker else allocate(len(positions), self.input_size)
        arrays = {key: tensor.numpy() for key, tensor in batch.items()}  # (B, ...) views to write the items into
        seeds = torch.randint(0, 2**62, (len(positions),)).tolist() if self.augment is not None else None
        draws = self._draw(seeds) if seeds is not None else None
        made = [self._fill_image(arrays["image"][slot], *self._read(position), draws, slot, seeds and seeds[slot])
                for slot, position in enumerate(positions)]  # (index, geometry) per item
        scalars = self._fill_labels(arrays, made)
        return BatchItems(share(batch) if in_worker else batch, scalars)

    def _draw(self, seeds: list[int]) -> AugmentationDraws:
        """The batch's augmentation: NUM_DRAWS uniforms from each item's stream (`_item_rng`), mapped at once."""
        uniforms = np.empty((len(seeds), NUM_DRAWS))
        for row, seed in zip(uniforms, seeds):
            self._item_rng(seed).random(out=row)
        return draw_augmentation(uniforms, self.augment, self.input_size)

    def _worker_batch(self, batch_size: int) -> dict[str, torch.Tensor]:
        """A DataLoader worker's batch to build in, reused for every batch of this size (`batch.share` copies it out
        to the process that asked for it): memory the process already has costs no page faults."""
        if batch_size not in self._worker_batches:
            self._worker_batches[batch_size] = allocate(batch_size, self.input_size)
        return self._worker_batches[batch_size]

    def _read(self, position: int) -> tuple[int, np.ndarray]:
        """(image file number, (H, W, 3) uint8 BGR) for `position`, or the next readable one in "skip" mode."""
        if not -len(self) <= position < len(self):
            raise IndexError(f"position {position} out of range for {len(self)} items")  # the Sequence protocol
        for attempt in range(_MAX_SKIPS):
            index = int(self.indices[(position + attempt) % len(self)])
            image = self._read_image(index)
            if image is not None:
                return index, image
        raise DataError(
            f"{_MAX_SKIPS} consecutive unreadable images from {image_path(self.root, self.split, index)} backwards; "
            "the image folder looks damaged: unpack it again."
        )

    def _read_image(self, index: int) -> np.ndarray | None:
        """(H, W, 3) uint8 BGR, or None for an unreadable image in "skip" mode."""
        image = cv2.imread(os.path.join(self.files.rgb_dir, image_name(index)), cv2.IMREAD_COLOR)  # str join: hot path
        if image is not None:
            return image
        path = image_path(self.root, self.split, index)
        problem = "is missing" if not path.is_file() else "cannot be decoded as an image"
        if self.on_bad_image == "raise":
            raise DataError(
                f"image {path} {problem}; expected a JPEG. Re-extract the dataset, or pass on_bad_image='skip' to "
                "skip such images (they are counted and warned about)."
            )
        self.skipped.append(str(path))
        warnings.warn(f"skipping image {path}: it {problem} ({len(self.skipped)} skipped so far in this process)",
                      stacklevel=2)
        return None

    def _fill_image(self, planes: np.ndarray, index: int, image: np.ndarray, draws: AugmentationDraws | None,
                    slot: int, seed: int | None) -> tuple[int, CropGeometry]:
        """Crops (and with `draws`, augments as its item `slot`, whose stream `seed` is) image file `index` (its
        (H, W, 3) uint8 BGR `image`) into `planes` (3, S, S); returns the index and the crop geometry."""
        sample_id = index % self.num_unique
        K, size = self.arrays["K"][sample_id], (image.shape[1], image.shape[0])
        if draws is None:
            geometry = crop_geometry(K, size, self.input_size)
        else:
            geometry = crop_geometry(K, size, self.input_size, draws.zoom[slot], draws.angle_rad[slot],
                                     draws.shift_px[slot])
        crop = warp_image(image, geometry, bgr=True)  # (S, S, 3) uint8 RGB, a new array
        if draws is not None:
            photometric(crop, draws, slot, out=crop)
            if draws.occluded[slot]:  # on the hand: its 2D keypoints, carried into the crop by the affine map
                affine = geometry.affine
                keypoints_2d = self.source_keypoints_2d[sample_id] @ affine[:2, :2].T + affine[:2, 2]  # (21, 2) px
                rng = self._item_rng(seed)
                rng.random(draws.used[slot])  # the occluder's draws follow the uniforms the item used, in its stream
                occlude(crop, self.augment.occlusion_size, rng, keypoints_2d, out=crop)
        to_chw(crop, out=planes)
        return index, geometry

    def _fill_labels(self, batch: dict[str, np.ndarray], made: list[tuple[int, CropGeometry]]
                     ) -> list[dict[str, bool | int]]:
        """Writes the labels of every item of `batch` (`made`: what `_fill_image` returned per slot); returns the
        items' scalars. One stacked operation per field: B items cost about what one did item by item."""
        indices = np.array([index for index, _ in made], dtype=np.int64)  # (B,)
        sample_ids = indices % self.num_unique
        rotations = np.stack([geometry.rotation for _, geometry in made])  # (B, 3, 3) R_z
        Ks = np.stack([geometry.K for _, geometry in made])  # (B, 3, 3) crop intrinsics, float64
        batch["K"][:] = Ks
        if "xyz" in self.arrays:
            keypoints_3d = rotate_points(self.arrays["xyz"][sample_ids], rotations)  # (B, 21, 3) m
            batch["keypoints_3d"][:] = keypoints_3d
            batch["keypoints_2d"][:] = project(keypoints_3d, Ks)  # (B, 21, 2) px
            batch["vertices"][:] = rotate_points(self.arrays["verts"][sample_ids], rotations)  # (B, 778, 3) m
        else:  # labels=False
            for key in ("keypoints_3d", "keypoints_2d", "vertices"):
                batch[key][:] = np.nan
        has_mano = "mano" in self.arrays
        if has_mano:
            mano = self.arrays["mano"][sample_ids]  # (B, 61)
            batch["mano_pose"][:] = rotate_global_orient(mano[:, :NUM_POSE_PARAMS], rotations)
            batch["mano_shape"][:] = mano[:, NUM_POSE_PARAMS : NUM_POSE_PARAMS + NUM_BETAS]
        else:
            batch["mano_pose"][:] = 0.0
            batch["mano_shape"][:] = 0.0
        versions = indices // self.num_unique
        batch["has_mano"][:] = has_mano
        batch["sample_id"][:] = sample_ids
        batch["version"][:] = versions
        batch["index"][:] = indices
        return [{"has_mano": has_mano, "sample_id": sample_id, "version": version, "index": index}
                for sample_id, version, index in zip(sample_ids.tolist(), versions.tolist(), indices.tolist())]

    def _item_rng(self, seed: int) -> np.random.Generator:
        """One item's augmentation randomness from its `seed` (drawn from torch's stream, which DataLoader seeds in
        each worker and `torch.manual_seed` fixes in one process). One PCG64 re-seeded in place: a new Generator per
        item costs ~50 us more (numpy's seed hashing)."""
        self._rng.bit_generator.state = {"bit_generator": "PCG64", "state": {"state": seed, "inc": _PCG_INCREMENT},
                                         "has_uint32": 0, "uinteger": 0}
        return self._rng
