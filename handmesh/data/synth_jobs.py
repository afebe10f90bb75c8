"""Rendering and writing the synthetic set's images, in this process or in worker processes (one GL context each).

The annotations are sampled first (`handmesh.data.synth`); these jobs only turn them into FreiHAND-layout JPEGs. Every
sample draws its look from its own random stream, so the files do not depend on the number of processes.
"""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from handmesh.data.synth_render import HandScene, SkinModel, dress, four_versions, sample_look
from handmesh.errors import DataError, HandmeshError
from handmesh.joints import FINGERTIP_VERTEX_IDS
from handmesh.mano import ManoLayer
from handmesh.poses import rest_frame

IMAGE_SIZE = 224
NUM_VERSIONS = 4
_JOB = 16  # samples per rendering job
_MIN_SAMPLES_PER_WORKER = 64


def sample_rng(seed: int, split: str, index: int, stream: int) -> np.random.Generator:
    """Each sample's own random stream: the data do not depend on the counts or on the generation order."""
    return np.random.default_rng([seed, ("training", "evaluation").index(split), index, stream])


def write_jpeg(path: Path, image: np.ndarray, quality: int) -> None:
    """(H, W, 3) RGB or (H, W) grey uint8 -> JPEG."""
    pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    if not cv2.imwrite(str(path), pixels, [cv2.IMWRITE_JPEG_QUALITY, int(quality)]):
        raise DataError(f"could not write {path}: expected a writable folder with free space.")


def skin_model(layer: ManoLayer) -> SkinModel:
    """The colouring model `dress` uses, built once from the right-hand model's rest mesh."""
    return SkinModel.build(layer.v_template.double().numpy(), layer.faces.numpy(), rest_frame(layer)[2],
                           FINGERTIP_VERTEX_IDS)


@dataclass(frozen=True)
class RenderJob:
    """A run of consecutive samples of one split to render and write: everything a worker process needs."""

    folder: Path
    split: str
    count: int  # samples in the split (FreiHAND numbers version v of sample i as v * count + i)
    seed: int
    start: int  # first sample index
    verts: np.ndarray  # (J, 778, 3) metres, camera frame, samples start .. start + J - 1
    xyz: np.ndarray  # (J, 21, 3)
    K: np.ndarray  # (J, 3, 3)


class _Renderer:
    """The skin model and one offscreen scene, made once per process; renders and writes `RenderJob`s."""

    def __init__(self, mano_dir: Path):
        self.skin = skin_model(ManoLayer.from_dir(mano_dir, "right"))
        self.scene = HandScene(IMAGE_SIZE)

    def __call__(self, job: RenderJob) -> int:
        rgb_dir, mask_dir = job.folder / job.split / "rgb", job.folder / job.split / "mask"
        for b in range(len(job.verts)):
            index = job.start + b
            rng = sample_rng(job.seed, job.split, index, 1)
            look = sample_look(rng)
            rendered = self.scene.render(*dress(self.skin, job.verts[b], job.xyz[b], look), job.K[b], look)
            versions = four_versions(rendered, rng)
            quality = int(rng.integers(85, 96))
            if job.split == "training":
                for version, image in enumerate(versions):  # FreiHAND: image v * N + i shows sample i in version v
                    write_jpeg(rgb_dir / f"{version * job.count + index:08d}.jpg", image, quality)
                write_jpeg(mask_dir / f"{index:08d}.jpg", ((rendered.alpha >= 0.5) * 255).astype(np.uint8), 95)
            else:
                write_jpeg(rgb_dir / f"{index:08d}.jpg", versions[int(rng.integers(NUM_VERSIONS))], quality)
        return len(job.verts)

    def close(self) -> None:
        self.scene.close()


_process_renderer: _Renderer | Exception | None = None  # a worker process's own (GL contexts cannot cross processes)


def _start_worker(mano_dir: Path) -> None:
    global _process_renderer
    torch.set_num_threads(1)
    try:
        _process_renderer = _Renderer(mano_dir)
    except HandmeshError as error:  # raised with the first job instead: a failing initializer is restarted forever
        _process_renderer = error


def _run_in_worker(job: RenderJob) -> int:
    if isinstance(_process_renderer, Exception):
        raise _process_renderer
    return _process_renderer(job)


def render_jobs(jobs: list[RenderJob], mano_dir: Path, workers: int, bar: tqdm) -> None:
    """Renders every job, in this process (workers == 1) or in `workers` processes, each with its own GL context.
    Every sample draws from its own random stream, so the files are the same either way."""
    workers = max(1, min(workers, len(jobs)))
    if workers == 1:
        renderer = _Renderer(mano_dir)
        try:
            for job in jobs:
                bar.update(renderer(job))
        finally:
            renderer.close()
        return
    context = multiprocessing.get_context("spawn")  # fresh processes: no GL or OpenMP state inherited
    with context.Pool(workers, initializer=_start_worker, initargs=(mano_dir,)) as pool:
        for done in pool.imap_unordered(_run_in_worker, jobs):
            bar.update(done)


def split_jobs(folder: Path, split: str, annotations: dict[str, np.ndarray], seed: int) -> list[RenderJob]:
    count = len(annotations["verts"])
    return [RenderJob(folder, split, count, seed, start, annotations["verts"][start:start + _JOB],
                       annotations["xyz"][start:start + _JOB], annotations["K"][start:start + _JOB])
            for start in range(0, count, _JOB)]


def default_workers(samples: int) -> int:
    """Rendering processes for a set of `samples`: one per available core, but small sets stay in this process
    (starting a worker - imports, a GL context - costs seconds)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, samples // _MIN_SAMPLES_PER_WORKER))
