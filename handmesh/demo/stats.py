"""How a demo run went, and `--stats-json`: the same numbers `handmesh bench --what demo` reports."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

from handmesh.demo.outputs import write_atomic

WARMUP_FRAMES = 5  # frames left out of the steady frame rate (GL context, first inference)


@dataclass
class DemoStats:
    """How a run went: frames out, rates, each stage's mean cost, what ran, and the hands found per frame."""

    frames: int
    seconds: float  # from the start of the pipeline to the last frame out
    steady_fps: float  # frames per second after the first WARMUP_FRAMES (start-up excluded)
    stage_ms: dict[str, float]  # mean per frame: capture, detect, infer, render
    dropped: int  # stale live frames skipped
    detector: str
    renderer: str
    engine: str = "torch"  # the Predictor's engine: torch or onnxruntime
    model: dict = field(default_factory=dict)  # encoder, input_size, trained, description
    detect_every: int = 1  # frames between detector runs (1: every frame)
    detector_frames: int | None = None  # frames the detector ran on (None: every frame, or the box tracker)
    hands_per_frame: list[int] = field(default_factory=list)  # hands found in each frame out, in order


def steady_fps(output_times: list[float], warmup: int = WARMUP_FRAMES) -> float:
    """Frames per second from perf_counter times at which frames came out, the first `warmup` ones left out (at most
    a quarter of them)."""
    warm = min(warmup, len(output_times) // 4)
    span = output_times[-1] - output_times[warm] if len(output_times) > warm + 1 else 0.0
    return (len(output_times) - 1 - warm) / span if span > 0 else 0.0


def model_summary(predictor) -> dict:
    """What the stats say about the network: encoder, input size, trained or not, the Predictor's description."""
    return {"encoder": predictor.model.config.encoder, "input_size": predictor.input_size,
            "trained": predictor.is_trained, "description": predictor.description}


def write_stats_json(stats: DemoStats, path: str | os.PathLike) -> None:
    """The stats as JSON (`frames`, `steady_fps`, `stage_ms`, ..., `hands_per_frame`), written atomically."""
    record = asdict(stats)
    record["steady_fps"] = round(record["steady_fps"], 3)
    record["seconds"] = round(record["seconds"], 3)
    record["stage_ms"] = {stage: round(ms, 3) for stage, ms in record["stage_ms"].items()}
    per_frame = record.pop("hands_per_frame")
    text = json.dumps(record, indent=1)[:-2] + f',\n "hands_per_frame": {json.dumps(per_frame)}\n}}\n'  # one line
    write_atomic(path, text)
