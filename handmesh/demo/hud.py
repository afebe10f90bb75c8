"""The on-screen display: rates and per-stage latency, status lines, boxes and the key help, scaled to the frame.

The text's size follows the frame's height, and the HUD's bands (top and bottom together) take at most
HUD_MAX_SHARE of it (SMALL_FRAME_SHARE on frames under SMALL_FRAME_HEIGHT), so the hand stays in view: lines are kept
in order of importance (rates, warnings, state, key help, model) while they fit; a line too wide for the frame first
uses its short forms, then wraps. No line is cut off at the frame's edge.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import cv2
import numpy as np

from handmesh.demo.crop import Box

KEY_HELP = "q quit  s save mesh  r record  m mesh/skeleton  f smoothing"
KEY_HELP_SHORT = "q quit  s save  r record  m view  f smooth"
STAGES = ("capture", "detect", "infer", "render")
TEXT_COLOUR = (255, 255, 255)  # RGB
WARNING_COLOUR = (255, 190, 60)
BOX_COLOUR = (90, 220, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX
HUD_MAX_SHARE = 0.2  # of the frame's height: the most the HUD's bands cover
SMALL_FRAME_HEIGHT = 360  # px: frames less high than this, where a hand fills much of the frame ...
SMALL_FRAME_SHARE = 0.15  # ... have at most this share covered
FONT_SCALE_PER_PX = 1 / 1100  # font scale per pixel of frame height (OpenCV's scale 1: ~22 px capitals)
FONT_SCALE_RANGE = (0.3, 1.0)  # below 0.3 Hershey letters are no longer legible
FPS_WINDOW = 30  # output frames the HUD's rate is averaged over
SEPARATOR = " | "


@dataclass(frozen=True)
class HudStyle:
    """Text size for one frame size."""

    scale: float  # OpenCV font scale
    line_height: int  # px per text row
    margin: int  # px around the text
    max_rows: int  # text rows the bands may hold (HUD_MAX_SHARE or SMALL_FRAME_SHARE of the height)


def hud_style(width: int, height: int) -> HudStyle:
    """The HUD's text size for a (width, height) px frame."""
    scale = float(np.clip(height * FONT_SCALE_PER_PX, *FONT_SCALE_RANGE))
    (_, text_height), baseline = cv2.getTextSize("Agy", FONT, scale, 1)
    line_height = text_height + baseline + max(2, round(4 * scale))
    margin = max(2, round(6 * scale))
    share = SMALL_FRAME_SHARE if height < SMALL_FRAME_HEIGHT else HUD_MAX_SHARE
    max_rows = max(0, int((share * height - 4 * margin) // line_height))  # a top and a bottom band
    return HudStyle(scale, line_height, margin, max_rows)


@dataclass
class HudLine:
    """One line of the HUD: pieces joined by " | ", each with a short form used when the frame is narrow."""

    pieces: list[tuple[str, str]]  # (text, short text)
    colour: tuple[int, int, int] = TEXT_COLOUR

    @classmethod
    def of(cls, text: str, colour: tuple[int, int, int] = TEXT_COLOUR) -> "HudLine":
        """A line from plain text; its " | "-separated pieces are where it may wrap."""
        return cls([(piece, piece) for piece in text.split(SEPARATOR)], colour)


def text_width(text: str, scale: float) -> int:
    return cv2.getTextSize(text, FONT, scale, 1)[0][0]


def wrap_line(line: HudLine, width: int, scale: float) -> list[str]:
    """The rows (each at most `width` px wide) that show `line`: in full on one row if it fits, else with short
    pieces, else wrapped between pieces, then between words, then (a word wider than a row) between characters."""
    for use_short in (False, True):
        text = SEPARATOR.join(short if use_short else full for full, short in line.pieces)
        if text_width(text, scale) <= width:
            return [text]
    rows: list[str] = []
    for word in " ".join(short for _, short in line.pieces).split(" "):
        candidate = f"{rows[-1]} {word}" if rows else word
        if rows and text_width(candidate, scale) <= width:
            rows[-1] = candidate
            continue
        while text_width(word, scale) > width and len(word) > 1:  # hard wrap of one long word (a path)
            cut = 1
            while cut < len(word) - 1 and text_width(word[: cut + 1], scale) <= width:
                cut += 1
            rows.append(word[:cut])
            word = word[cut:]
        rows.append(word)
    return rows


def layout(lines: list[HudLine], width: int, style: HudStyle, rows: int | None = None) -> list[list[str]]:
    """For each line (given most important first), its rows, or [] where it does not fit in the `rows` left."""
    left = style.max_rows if rows is None else rows
    placed = []
    for line in lines:
        if not any(full for full, _ in line.pieces):
            placed.append([])
            continue
        wrapped = wrap_line(line, width - 2 * style.margin, style.scale)
        fits = len(wrapped) <= left
        placed.append(wrapped if fits else [])
        left -= len(wrapped) if fits else 0
    return placed


def draw_rows(image: np.ndarray, rows: list[tuple[str, tuple[int, int, int]]], style: HudStyle, top: bool) -> None:
    """Rows of (text, RGB colour) on a darkened band at the top (or bottom) left, in place."""
    if not rows:
        return
    width = max(text_width(text, style.scale) for text, _ in rows) + 2 * style.margin
    height = style.line_height * len(rows) + 2 * style.margin
    y0 = 0 if top else image.shape[0] - height
    band = image[max(0, y0) : y0 + height, : min(width, image.shape[1])]
    band[:] = (band.astype(np.float32) * 0.35).astype(np.uint8)
    (_, text_height), baseline = cv2.getTextSize("Agy", FONT, style.scale, 1)
    gap = style.line_height - text_height - baseline
    for row, (text, colour) in enumerate(rows):
        y = y0 + style.margin + style.line_height * row + gap // 2 + text_height  # the text's baseline
        cv2.putText(image, text, (style.margin, y), FONT, style.scale, colour, 1, cv2.LINE_AA)


def draw_text_block(image: np.ndarray, lines: list[tuple[str, tuple[int, int, int]]] | list[HudLine],
                    top: bool = True) -> None:
    """Lines of (text, RGB colour) or `HudLine`s, most important first, on a dark band at the top (or bottom), in
    place; the lines that do not fit in the HUD's share of the frame are left out."""
    hud_lines = [line if isinstance(line, HudLine) else HudLine.of(*line) for line in lines]
    style = hud_style(image.shape[1], image.shape[0])
    placed = layout(hud_lines, image.shape[1], style)
    draw_rows(image, [(text, line.colour) for line, rows in zip(hud_lines, placed) for text in rows], style, top)


def hud_lines(rates: "RateMeter", state: list[str], status_lines: list[str], key_help: bool = False) -> list[HudLine]:
    """The HUD's lines, most important first: the rates, warnings (status_lines[1:], e.g. UNTRAINED, STAND-IN; short
    form: up to the first ':' or ' ('), the state pieces, with key_help the keys, and the model (status_lines[0])."""
    model, warnings = (status_lines[0], status_lines[1:]) if status_lines else ("", [])
    lines = [rates.line()]
    if warnings:
        lines.append(HudLine([(text, text.split(":")[0].split(" (")[0]) for text in warnings], WARNING_COLOUR))
    lines.append(HudLine([(piece, piece) for piece in state]))
    if key_help:
        lines.append(HudLine([(KEY_HELP, KEY_HELP_SHORT)]))
    if model:
        lines.append(HudLine([(model, model.split(" (")[0])]))
    return lines


def draw_hud(image: np.ndarray, detections, rates: "RateMeter", state: list[str], status_lines: list[str],
             start_box: Box | None = None, key_help: bool = False) -> np.ndarray:
    """The frame with the HUD drawn on it (a copy): each detection's box labelled L or R (the tracker's start box
    asks for a hand), and the `hud_lines` that fit (`hud_style`), the key help at the bottom.

    image (H, W, 3) uint8 RGB; detections: `handmesh.demo.detect.Detection`s; state: short words such as the
    detector's name, "smoothing on"; status_lines: the model, then warnings."""
    image = image.copy()
    style = hud_style(image.shape[1], image.shape[0])
    for detection in detections:
        label = "put your hand in the box" if start_box is not None and detection.box == start_box else (
            "L" if detection.is_left else "R")
        draw_box(image, detection.box, label, BOX_COLOUR, style)
    lines = hud_lines(rates, state, status_lines, key_help)
    placed = layout(lines, image.shape[1], style)
    keys = 3 if key_help else None  # the key help's index in `lines`
    draw_rows(image, [(text, line.colour) for index, (line, rows) in enumerate(zip(lines, placed)) if index != keys
                      for text in rows], style, top=True)
    if keys is not None:
        draw_rows(image, [(text, lines[keys].colour) for text in placed[keys]], style, top=False)
    return image


class RateMeter:
    """The output frame rate over the last FPS_WINDOW frames, and per-stage milliseconds: moving averages for the
    HUD, sums for the run's means."""

    def __init__(self, smoothing: float = 0.1, window: int = FPS_WINDOW):
        self.smoothing = smoothing
        self.stage_ms: dict[str, float] = {}  # moving averages, for the HUD
        self.totals_ms: dict[str, float] = {}  # sums over every frame, for the final means
        self.counts: dict[str, int] = {}
        self._times: collections.deque[float] = collections.deque(maxlen=window + 1)

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
        self._times.append(now)

    @property
    def fps(self) -> float | None:
        """Frames per second over the last frame intervals (up to FPS_WINDOW): intervals / their span; None before
        the second frame."""
        span = self._times[-1] - self._times[0] if len(self._times) > 1 else 0.0
        return (len(self._times) - 1) / span if span > 0 else None

    def line(self) -> HudLine:
        """The rate (when there is one) and each stage's ms, with a short form for narrow frames."""
        stages = [stage for stage in STAGES if stage in self.stage_ms]
        full = "ms: " + "  ".join(f"{stage} {self.stage_ms[stage]:.0f}" for stage in stages)
        short = " ".join(f"{stage[:3]} {self.stage_ms[stage]:.0f}" for stage in stages) + " ms"
        pieces = [(full, short)] if stages else []
        if self.fps is not None:
            pieces.insert(0, (f"{self.fps:4.1f} FPS", f"{self.fps:.1f} FPS"))
        return HudLine(pieces)

    def summary(self) -> str:
        return SEPARATOR.join(full for full, _ in self.line().pieces)


def draw_box(image: np.ndarray, box: Box, label: str = "", colour: tuple[int, int, int] = BOX_COLOUR,
             style: HudStyle | None = None) -> None:
    """A square outline with an optional label above it (inside the frame), in place."""
    style = style or hud_style(image.shape[1], image.shape[0])
    x0, y0, x1, y1 = box.corners()
    cv2.rectangle(image, (x0, y0), (x1, y1), colour, max(1, round(min(image.shape[:2]) / 320)), cv2.LINE_AA)
    if label:
        (width, height), _ = cv2.getTextSize(label, FONT, style.scale, 1)
        x = int(np.clip(x0 + 4, 0, max(0, image.shape[1] - width - 1)))
        y = int(np.clip(y0 - 4, height + 1, image.shape[0] - 2))
        cv2.putText(image, label, (x, y), FONT, style.scale, colour, 1, cv2.LINE_AA)
