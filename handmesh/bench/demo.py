"""`handmesh bench --what demo`: the demo's end-to-end frame rate, as a user runs it, against the model alone and
against timm's FastViT-MA36 encoder, on the same machine in the same run.

A 640x480 clip of the stand-in hand is generated, then run headless through the whole demo with its defaults
(capture -> MediaPipe every --detect-every frames, the hand followed from its keypoints in between -> Predictor on
the default engine -> GL overlay -> HUD -> mp4), every frame processed; the numbers are those `--stats-json` writes.

    demo_to_model_ratio     the demo's steady rate / `Predictor.predict` alone (batch 1, same engine and threads);
                            goal >= 0.8 (the stages overlap, so the slowest one sets the rate)
    ma36_demo_to_timm_ratio (full run) the demo with FastViT-MA36 at 224 px / timm's train-time MA36 encoder alone
                            (eager PyTorch, batch 1, all cores); goal >= 1.5

The demo's own model is the quickstart checkpoint when present, else the untrained fastvit_t8 at 128 px.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from handmesh.bench.timing import time_call
from handmesh.demo.app import DEFAULT_CHECKPOINT, add_arguments, default_threads, load_predictor, run_demo
from handmesh.demo.crop import Box, crop_hand
from handmesh.demo.hud import STAGES
from handmesh.demo.overlay import LLVMPIPE_THREADS, llvmpipe_threads
from handmesh.demo.synthetic import SyntheticClip, write_synthetic_clip
from handmesh.mano_file import resolve_mano_dir
from handmesh.threads import torch_threads

WIDTH, HEIGHT = 640, 480
FRAMES = {True: 30, False: 150}  # quick, full
TARGET_RATIO = 0.8  # demo / model alone
TARGET_TIMM_RATIO = 1.5  # MA36 demo / timm's MA36 encoder alone
TIMM_MA36 = "fastvit_ma36"
MA36_SIZE = 224


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


def timm_encoder_ms(runs: int, threads: int) -> float:
    """Median ms of timm's train-time FastViT-MA36 (random weights, eval, eager) on one 224 px image, `threads`."""
    import timm
    import torch

    encoder = timm.create_model(TIMM_MA36, pretrained=False, num_classes=0).eval()
    image = torch.rand(1, 3, MA36_SIZE, MA36_SIZE)
    with torch_threads(threads), torch.inference_mode():
        return time_call(lambda: encoder(image), runs=runs, warmup=3).median_ms


def _measure(predictor, clip: SyntheticClip, mano_dir: Path, threads: int, folder: Path, prefix: str,
             runs: int) -> dict:
    """The demo's steady rate on the clip (its --stats-json) and the model's alone, both with `threads` threads.

    The model alone is timed half before and half after the demo run, so a busy spell on a shared machine biases
    neither side."""
    inputs = itertools.cycle(_crops(clip, predictor))
    model_alone = lambda: predictor.predict(*next(inputs))  # noqa: E731
    with torch_threads(threads):
        before = time_call(model_alone, runs=max(1, runs // 2), warmup=3)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    stats_path = folder / f"{prefix}stats.json"
    run_demo(parser.parse_args([
        "--source", str(clip.path), "--no-window", "--mano-dir", str(mano_dir), "--threads", str(threads),
        "--out", str(folder / f"{prefix}overlay.mp4"), "--stats-json", str(stats_path),
    ]), predictor)
    stats = json.loads(stats_path.read_text())
    with torch_threads(threads):
        after = time_call(model_alone, runs=max(1, runs // 2), warmup=1)
    model_ms = (before.median_ms + after.median_ms) / 2
    model_fps = 1e3 / model_ms
    found = stats["hands_per_frame"]
    result = {
        "demo_fps": round(stats["steady_fps"], 2),
        "model_only_fps": round(model_fps, 2),
        "demo_to_model_ratio": round(stats["steady_fps"] / model_fps, 3),
        "model_only_ms": round(model_ms, 2),
        "demo_frames": stats["frames"],
        "frames_with_a_hand": sum(1 for count in found if count > 0),
        "detector": stats["detector"],
        "detector_frames": stats["detector_frames"],
        "engine": stats["engine"],
        "encoder": stats["model"]["encoder"],
        "input_size": stats["model"]["input_size"],
        "renderer": stats["renderer"],
    }
    result.update({f"{stage}_ms": round(ms, 2) for stage, ms in stats["stage_ms"].items()})
    return result


def run(quick: bool = False) -> dict:
    """Keys without a prefix: the demo's own model (quickstart checkpoint, else untrained fastvit_t8 128 px).
    `ma36_*` (full run only): an untrained FastViT-MA36 at 224 px, the paper's network, where the model dominates,
    and `timm_ma36_*`: timm's train-time MA36 encoder alone, eager, batch 1, all cores."""
    from handmesh.inference import Predictor

    threads = default_threads()
    cores = os.cpu_count() or 1
    frames = FRAMES[quick]
    with tempfile.TemporaryDirectory(prefix="handmesh-bench-demo-") as folder:
        folder = Path(folder)
        mano_dir = resolve_mano_dir().directory
        # models first: timm (and triton's LLVM) must load before the GL renderer's (Mesa's) LLVM
        predictors = {"": load_predictor(None, str(mano_dir), engine="auto", threads=threads)}
        if not quick:
            predictors["ma36_"] = Predictor.untrained(encoder=TIMM_MA36, input_size=MA36_SIZE, mano_dir=mano_dir,
                                                      engine="auto", threads=threads)
        # Mesa fixes llvmpipe's thread count at the process's first GL context, here the clip's: give it the demo's
        with llvmpipe_threads(LLVMPIPE_THREADS):
            clip = write_synthetic_clip(folder / "clip.mp4", mano_dir, frames=frames, width=WIDTH, height=HEIGHT)
        result = {
            "frame_size": f"{WIDTH}x{HEIGHT}",
            "model": "quickstart checkpoint" if DEFAULT_CHECKPOINT.is_file() else "untrained fastvit_t8 128px",
            "model_threads": threads,
            "cores": cores,
        }
        timm_runs = []  # timed before and after the demo runs: a busy spell biases neither side
        for prefix, predictor in predictors.items():
            if prefix == "ma36_":
                timm_runs.append(timm_encoder_ms(runs=15, threads=cores))
            measured = _measure(predictor, clip, mano_dir, threads, folder, prefix, min(frames, 60))
            result.update({f"{prefix}{key}": value for key, value in measured.items()})
        if not quick:
            timm_ms = (timm_runs[0] + timm_encoder_ms(runs=15, threads=cores)) / 2
            result["timm_ma36_encoder_ms"] = round(timm_ms, 2)
            result["timm_ma36_encoder_fps"] = round(1e3 / timm_ms, 2)
            result["ma36_demo_to_timm_ratio"] = round(result["ma36_demo_fps"] * timm_ms / 1e3, 3)
    return result


def format_table(result: dict) -> str:
    """The readable report: the demo's steady rate against the model's, per model, with the stage costs."""
    lines = [f"demo on a generated {result['frame_size']} clip with its defaults, {result['model_threads']} model "
             f"thread(s) on {result['cores']} core(s); goal demo / model alone >= {TARGET_RATIO}"]
    for prefix, label in (("", result["model"]), ("ma36_", f"untrained {TIMM_MA36} {MA36_SIZE}px")):
        if f"{prefix}demo_fps" not in result:
            continue
        stages = ", ".join(f"{stage} {result[f'{prefix}{stage}_ms']:.1f}" for stage in STAGES
                           if f"{prefix}{stage}_ms" in result)
        lines.append(
            f"{label}: demo {result[f'{prefix}demo_fps']:.1f} FPS, model alone {result[f'{prefix}model_only_fps']:.1f} "
            f"FPS, ratio {result[f'{prefix}demo_to_model_ratio']:.2f} ({result[f'{prefix}engine']} engine, "
            f"{result[f'{prefix}detector']} detector on {result[f'{prefix}detector_frames']} of "
            f"{result[f'{prefix}demo_frames']} frames, hand in {result[f'{prefix}frames_with_a_hand']}; "
            f"{result[f'{prefix}renderer']} renderer; mean ms per frame: {stages})")
    if "timm_ma36_encoder_fps" in result:
        lines.append(f"timm's train-time {TIMM_MA36} encoder alone (eager, batch 1, {result['cores']} threads): "
                     f"{result['timm_ma36_encoder_fps']:.1f} FPS; the MA36 demo end to end runs at "
                     f"{result['ma36_demo_to_timm_ratio']:.2f}x that rate (goal >= {TARGET_TIMM_RATIO})")
    return "\n".join(lines)
