"""`handmesh bench --what demo`: the demo's end-to-end frame rate against the model alone, on the same machine.

A 640x480 clip of the stand-in hand is generated, then run headless through the whole demo (capture -> box tracker ->
Predictor -> GL overlay -> HUD -> mp4), every frame processed. The model-only rate is `Predictor.predict` (batch 1)
on crops of the same frames around the hand, with the same torch thread count as the demo. Goal:
demo_to_model_ratio >= 0.8 (the stages overlap, so the slowest one sets the rate). The model is the quickstart
checkpoint when present, else the untrained fastvit_t8 at 128 px.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

import cv2
import numpy as np

from handmesh.bench.timing import bench_threads, time_call
from handmesh.demo.app import DEFAULT_CHECKPOINT, add_arguments, default_threads, load_predictor, run_demo
from handmesh.demo.crop import Box, crop_hand
from handmesh.demo.hud import STAGES
from handmesh.demo.overlay import LLVMPIPE_THREADS, llvmpipe_threads
from handmesh.demo.synthetic import SyntheticClip, write_synthetic_clip
from handmesh.mano_file import resolve_mano_dir

WIDTH, HEIGHT = 640, 480
FRAMES = {True: 30, False: 150}  # quick, full
TARGET_RATIO = 0.8


def _crops(clip: SyntheticClip, predictor) -> list[tuple[np.ndarray, np.ndarray]]:
    """Crops around the hand in every frame of the clip: [(crop (1, S, S, 3) uint8, K (1, 3, 3))]."""
    capture = cv2.VideoCapture(str(clip.path))
    crops = []
    for keypoints in clip.keypoints_2d:
        ok, image = capture.read()
        if not ok:
            break
        crop = crop_hand(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), Box.around(keypoints), clip.K, predictor.input_size,
                         is_left=False)
        crops.append((crop.image[None], crop.K[None]))
    capture.release()
    return crops


def _measure(predictor, clip: SyntheticClip, mano_dir: Path, threads: int, out: Path, runs: int) -> dict:
    """The demo's steady rate on the clip and the model's alone, both with `threads` torch threads.

    The model alone is timed half before and half after the demo run, so a busy spell on a shared machine biases
    neither side."""
    inputs = itertools.cycle(_crops(clip, predictor))
    model_alone = lambda: predictor.predict(*next(inputs))  # noqa: E731
    with bench_threads(threads):
        before = time_call(model_alone, runs=max(1, runs // 2), warmup=3)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    stats = run_demo(parser.parse_args([
        "--source", str(clip.path), "--no-window", "--detector", "tracker", "--mano-dir", str(mano_dir),
        "--threads", str(threads), "--out", str(out),
    ]), predictor)
    with bench_threads(threads):
        after = time_call(model_alone, runs=max(1, runs // 2), warmup=1)
    model_ms = (before.median_ms + after.median_ms) / 2
    model_fps = 1e3 / model_ms
    result = {
        "demo_fps": round(stats.steady_fps, 2),
        "model_only_fps": round(model_fps, 2),
        "demo_to_model_ratio": round(stats.steady_fps / model_fps, 3),
        "model_only_ms": round(model_ms, 2),
        "demo_frames": stats.frames,
        "input_size": predictor.input_size,
        "renderer": stats.renderer,
    }
    result.update({f"{stage}_ms": round(ms, 2) for stage, ms in stats.stage_ms.items()})
    return result


def run(quick: bool = False) -> dict:
    """Keys without a prefix: the demo's own model (quickstart checkpoint, else untrained fastvit_t8 128 px).
    `ma36_*` (full run only): an untrained FastViT-MA36 at 224 px, the paper's network, where the model dominates."""
    from handmesh.inference import Predictor

    threads = default_threads()
    frames = FRAMES[quick]
    with tempfile.TemporaryDirectory(prefix="handmesh-bench-demo-") as folder:
        folder = Path(folder)
        mano_dir = resolve_mano_dir().directory
        # models first: timm (and triton's LLVM) must load before the GL renderer's (Mesa's) LLVM
        predictors = {"": load_predictor(None, str(mano_dir))}
        if not quick:
            predictors["ma36_"] = Predictor.untrained(encoder="fastvit_ma36", input_size=224, mano_dir=mano_dir)
        # Mesa fixes llvmpipe's thread count at the process's first GL context, here the clip's: give it the demo's
        with llvmpipe_threads(LLVMPIPE_THREADS):
            clip = write_synthetic_clip(folder / "clip.mp4", mano_dir, frames=frames, width=WIDTH, height=HEIGHT)
        result = {
            "frame_size": f"{WIDTH}x{HEIGHT}",
            "model": "quickstart checkpoint" if DEFAULT_CHECKPOINT.is_file() else "untrained fastvit_t8 128px",
            "detector": "tracker",
            "torch_threads": threads,
        }
        for prefix, predictor in predictors.items():
            measured = _measure(predictor, clip, mano_dir, threads, folder / f"{prefix}overlay.mp4", min(frames, 60))
            result.update({f"{prefix}{key}": value for key, value in measured.items()})
    return result


def format_table(result: dict) -> str:
    """The readable report: the demo's steady rate against the model's, per model, with the stage costs."""
    lines = [f"demo on a generated {result['frame_size']} clip, {result['detector']} detector, {result['torch_threads']} "
             f"torch thread(s) for the model in both columns; goal demo / model >= {TARGET_RATIO}"]
    for prefix, label in (("", result["model"]), ("ma36_", "untrained fastvit_ma36 224px")):
        if f"{prefix}demo_fps" not in result:
            continue
        stages = ", ".join(f"{stage} {result[f'{prefix}{stage}_ms']:.1f}" for stage in STAGES
                           if f"{prefix}{stage}_ms" in result)
        lines.append(f"{label}: demo {result[f'{prefix}demo_fps']:.1f} FPS, model alone "
                     f"{result[f'{prefix}model_only_fps']:.1f} FPS, ratio {result[f'{prefix}demo_to_model_ratio']:.2f} ({result[f'{prefix}renderer']} renderer; "
                     f"mean ms per frame: {stages})")
    return "\n".join(lines)
