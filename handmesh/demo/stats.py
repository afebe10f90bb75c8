"""How a demo run went, and `--stats-json`: the same numbers `handmesh bench --what demo` reports."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from handmesh.atomic import write_bytes_atomic

WARMUP_FRAMES = 5  # frames left out of the steady frame rate and stage means (GL context, first inference)


@dataclass
class DemoStats:
    """How a run went: frames out, rates, each stage's mean cost, what ran, and the hands found per frame."""

    frames: int
    seconds: float  # from the start of the pipeline to the last frame out
    steady_fps: float | None  # `steady_rate`: frames per second after the warm-up; None with fewer than 2 such frames
    stage_ms: dict[str, float]  # mean ms per frame after the warm-up: capture, detect, infer, render
    dropped: int  # stale live frames skipped
    detector: str
    renderer: str
    engine: str = "torch"  # the Predictor's engine: torch or onnxruntime
    model: dict = field(default_factory=dict)  # encoder, input_size, trained, description
    detect_every: int = 1  # frames between detector runs (1: every frame)
    detector_frames: int | None = None  # frames the detector ran on (None: every frame, or the box tracker)
    hands_per_frame: list[int] = field(default_factory=list)  # hands found in each frame out, in order
    warmup_frames: int = 0  # the first frames, left out of steady_fps and stage_ms

    def summary(self) -> str:
        """One line: frames, time, the steady rate (none for a single frame) and each stage's ms, over the same
        frames."""
        noun = "frame" if self.frames == 1 else "frames"
        rate = f"{self.steady_fps:.1f} frames/s, " if self.steady_fps is not None else ""
        stages = ", ".join(f"{stage} {ms:.1f}" for stage, ms in self.stage_ms.items())
        scope = f" (the frames after the first {self.warmup_frames}: start-up excluded)" if self.warmup_frames else ""
        dropped = f"; {self.dropped} stale frames dropped" if self.dropped else ""
        return f"{self.frames} {noun} in {self.seconds:.1f} s; {rate}ms per frame: {stages}{scope}{dropped}"


def warmup_count(frames: int, warmup: int = WARMUP_FRAMES) -> int:
    """How many of `frames` first frames are warm-up: `warmup`, but at most a quarter of them."""
    return min(warmup, frames // 4)


def steady_rate(output_times: list[float], started_s: list[dict[str, float]], timings_ms: list[dict[str, float]],
                warmup: int = WARMUP_FRAMES) -> tuple[float | None, dict[str, float]]:
    """The steady frame rate and each stage's mean ms over the frames after the warm-up.

    output_times: perf_counter seconds at which each frame came out; started_s, timings_ms: each frame's per-stage
    start times (s) and durations (ms). Rate = frames after the warm-up / their wall time, which runs from the moment
    the slowest stage (largest mean ms) began the first of them to the moment the last came out: in that time the
    slowest stage worked on every one of them, one at a time, so the rate cannot exceed 1000 / its mean ms (frames
    that waited in the queues during the warm-up do not count as done in no time). None with fewer than two frames.
    """
    count = len(output_times)
    first = warmup_count(count, warmup)
    steady = timings_ms[first:]
    stages = {stage: None for frame in steady for stage in frame}
    stage_ms = {stage: float(np.mean([frame[stage] for frame in steady if stage in frame])) for stage in stages}
    if count - first < 2 or not stage_ms:
        return None, stage_ms
    slowest = max(stage_ms, key=stage_ms.get)
    begin = started_s[first].get(slowest, output_times[first])
    span = output_times[-1] - begin
    return ((count - first) / span if span > 0 else None), stage_ms


def model_summary(predictor) -> dict:
    """What the stats say about the network: encoder, input size, trained or not, the Predictor's description."""
    return {"encoder": predictor.model.config.encoder, "input_size": predictor.input_size,
            "trained": predictor.is_trained, "description": predictor.description}


def write_stats_json(stats: DemoStats, path: str | os.PathLike) -> None:
    """The stats as JSON (`frames`, `steady_fps`, `stage_ms`, ..., `hands_per_frame`), written atomically."""
    record = asdict(stats)
    record["steady_fps"] = None if stats.steady_fps is None else round(stats.steady_fps, 3)
    record["seconds"] = round(record["seconds"], 3)
    record["stage_ms"] = {stage: round(ms, 3) for stage, ms in record["stage_ms"].items()}
    per_frame = record.pop("hands_per_frame")
    text = json.dumps(record, indent=1)[:-2] + f',\n "hands_per_frame": {json.dumps(per_frame)}\n}}\n'  # one line
    write_bytes_atomic(path, text)
