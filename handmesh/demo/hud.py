"""The on-screen display: rates and per-stage latency, status lines, boxes and the key help."""

from __future__ import annotations

import cv2
import numpy as np

from handmesh.demo.crop import Box

KEY_HELP = "q quit  s save mesh  r record  m mesh/skeleton  f smoothing"
STAGES = ("capture", "detect", "infer", "render")
TEXT_COLOUR = (255, 255, 255)  # RGB
WARNING_COLOUR = (255, 190, 60)
BOX_COLOUR = (90, 220, 255)


class RateMeter:
    """Exponential moving averages of per-stage milliseconds and of the output frame rate."""

    def __init__(self, smoothing: float = 0.1):
        self.smoothing = smoothing
        self.stage_ms: dict[str, float] = {}  # moving averages, for the HUD
        self.totals_ms: dict[str, float] = {}  # sums over every frame, for the final means
        self.counts: dict[str, int] = {}
        self.fps = 0.0
        self._last_time: float | None = None

    def add_stages(self, timings_ms: dict[str, float]) -> None:
        for stage, ms in timings_ms.items():
            previous = self.stage_ms.get(stage)
            self.stage_ms[stage] = ms if previous is None else previous + self.smoothing * (ms - previous)
            self.totals_ms[stage] = self.totals_ms.get(stage, 0.0) + ms
            self.counts[stage] = self.counts.get(stage, 0) + 1

    def mean_ms(self) -> dict[str, float]:
        """Each stage's mean milliseconds per frame over the whole run."""
        return {stage: self.totals_ms[stage] / self.counts[stage] for stage in self.totals_ms}

    def tick(self, now: float) -> None:
        """Count one output frame at time `now` seconds."""
        if self._last_time is not None and now > self._last_time:
            rate = 1.0 / (now - self._last_time)
            self.fps = rate if self.fps == 0.0 else self.fps + self.smoothing * (rate - self.fps)
        self._last_time = now

    def summary(self) -> str:
        stages = "  ".join(f"{stage} {self.stage_ms[stage]:.0f}" for stage in STAGES if stage in self.stage_ms)
        return f"{self.fps:4.1f} FPS | ms: {stages}"


def draw_text_block(image: np.ndarray, lines: list[tuple[str, tuple[int, int, int]]], top: bool = True) -> None:
    """Lines of (text, RGB colour) on a dark band at the top (or bottom) left, in place."""
    if not lines:
        return
    scale = max(0.4, min(image.shape[:2]) / 900)
    thickness = 1
    lines = [(fit_text(text, image.shape[1] - 12, scale), colour) for text, colour in lines]
    line_height = int(24 * scale / 0.55)
    width = max(cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)[0][0] for text, _ in lines) + 12
    height = line_height * len(lines) + 8
    y0 = 0 if top else image.shape[0] - height
    band = image[y0 : y0 + height, : min(width, image.shape[1])]
    band[:] = (band.astype(np.float32) * 0.35).astype(np.uint8)
    for row, (text, colour) in enumerate(lines):
        baseline = y0 + 4 + line_height * (row + 1) - line_height // 4
        cv2.putText(image, text, (6, baseline), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)


def fit_text(text: str, width: int, scale: float) -> str:
    """text, cut with an ellipsis to fit `width` px in the HUD font."""
    if cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] <= width:
        return text
    while len(text) > 1 and cv2.getTextSize(text + "...", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > width:
        text = text[:-1]
    return text + "..."


def draw_box(image: np.ndarray, box: Box, label: str = "", colour: tuple[int, int, int] = BOX_COLOUR) -> None:
    """A square outline with an optional label above it, in place."""
    x0, y0, x1, y1 = box.corners()
    cv2.rectangle(image, (x0, y0), (x1, y1), colour, max(1, round(min(image.shape[:2]) / 320)), cv2.LINE_AA)
    if label:
        cv2.putText(image, label, (x0 + 4, max(14, y0 - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
