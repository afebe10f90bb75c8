"""Finding hands in a frame: MediaPipe Hands (a dependency where its wheels exist), else a box tracked from the model's
own keypoints.

Handedness: `mediapipe.solutions.hands` labels hands as if the image were a mirrored selfie, i.e. its label is the
handedness of the hand in the *horizontally flipped* image. We never mirror the frames we process (the 3D outputs
must stay in the real camera's frame), so a hand that mediapipe calls "Right" looks like a left hand in our image,
and we crop it as a left hand (flipped). Put simply: is_left = (label == "Right"), for webcams and files alike.

One hand, one detection: MediaPipe can report a left and a right hand on the same hand (its two tracks overlapping).
Boxes that overlap by more than MERGE_IOU are one hand; the detection with the higher handedness score is kept, with
its side. `--hand right|left` forces the side of every detection (for one-sided footage, or where the handedness
classifier is unsure, as on the stand-in hand).
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import tempfile
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from handmesh.demo.crop import DEFAULT_BOX_SCALE, Box, HandEstimate
from handmesh.errors import HandmeshError

DETECTORS = ("auto", "mediapipe", "tracker")
REINSTALL = "reinstall it: pip install --force-reinstall mediapipe==0.10.14"
START_BOX_FRACTION = 0.6  # the tracker's starting box: this share of min(W, H), centred
MIN_BOX_FRACTION = 0.08  # a tracked box smaller than this share of min(W, H) is lost: back to the start box
MAX_BOX_FRACTION = 1.5  # ... and one larger than this share of max(W, H)
HANDS = ("auto", "right", "left")  # --hand: the detector's handedness (auto; the tracker: right), or forced
MERGE_IOU = 0.5  # boxes overlapping more than this (intersection over union) are one hand: one detection is kept
# MediaPipe's (TFLite, absl) start-up lines on stderr that say nothing to a user, each with its newline (another
# thread's output, a progress bar, may precede one on the same line); any other text is passed on
NATIVE_NOISE = (
    re.compile(r"INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.\r?\n"),
    re.compile(r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR\r?\n"),
    re.compile(r"W\d{4} [\d:. ]+\d+ inference_feedback_manager\.cc:\d+\] Feedback manager requires a model with a "
               r"single signature inference\. Disabling support for feedback tensors\.\r?\n"),
)


@dataclass
class Detection:
    """A hand to crop: where, which side (as it looks in the image), and a track id stable across frames."""

    box: Box
    is_left: bool
    score: float  # the detector's confidence in the side (mediapipe: its handedness score) in [0, 1]; 1 for the tracker
    track_id: int = 0


def plausible_box(box: Box, width: int, height: int) -> bool:
    """A followed hand's next box: finite, centred inside the frame, between MIN and MAX_BOX_FRACTION of its size."""
    if not np.isfinite(box.as_array()).all():
        return False
    inside = 0 <= box.cx < width and 0 <= box.cy < height
    return bool(inside and MIN_BOX_FRACTION * min(width, height) <= box.size <= MAX_BOX_FRACTION * max(width, height))


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two square boxes, in [0, 1]."""
    overlap_x = max(0.0, min(a.cx + a.size / 2, b.cx + b.size / 2) - max(a.cx - a.size / 2, b.cx - b.size / 2))
    overlap_y = max(0.0, min(a.cy + a.size / 2, b.cy + b.size / 2) - max(a.cy - a.size / 2, b.cy - b.size / 2))
    intersection = overlap_x * overlap_y
    union = a.size**2 + b.size**2 - intersection
    return intersection / union if union > 0 else 0.0


def merge_overlapping(detections: list[Detection], min_iou: float = MERGE_IOU) -> list[Detection]:
    """One detection per hand: of boxes overlapping by more than `min_iou`, the one with the highest score is kept
    (with its side), whatever sides they were given. Order: by score, highest first."""
    kept: list[Detection] = []
    for detection in sorted(detections, key=lambda d: -d.score):
        if all(box_iou(detection.box, other.box) <= min_iou for other in kept):
            kept.append(detection)
    return kept


def forced_side(hand: str) -> bool | None:
    """--hand -> is_left to force on every detection, or None to keep the detector's handedness (auto)."""
    if hand not in HANDS:
        raise HandmeshError(f"--hand {hand!r}: expected one of {', '.join(HANDS)}")
    return None if hand == "auto" else hand == "left"


_STDERR_LOCK = threading.Lock()


@contextmanager
def native_stderr_filtered(noise: tuple[re.Pattern, ...] = NATIVE_NOISE):
    """Within the block, what native code writes to file descriptor 2 is held back; on exit it is written to stderr
    without the `noise` lines (errors are never lost; other threads' output is only delayed)."""
    with _STDERR_LOCK:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):  # no usable stderr: nothing to filter
            yield
            return
        with tempfile.TemporaryFile() as held:
            os.dup2(held.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                held.seek(0)
                kept = held.read().decode(errors="replace")
                for pattern in noise:
                    kept = pattern.sub("", kept)
                if kept:
                    sys.stderr.write(kept)
                    sys.stderr.flush()


def mediapipe_available() -> bool:
    return importlib.util.find_spec("mediapipe") is not None


def is_left_from_mediapipe(label: str) -> bool:
    """mediapipe's handedness label (for the mirrored image) -> is the hand a left hand in the unmirrored frame."""
    return label == "Right"


def _centre_distance(a: Detection, b: Detection) -> float:
    """Distance between the centres of two detections' boxes, px."""
    return np.hypot(a.box.cx - b.box.cx, a.box.cy - b.box.cy)


class TrackMatcher:
    """Gives detections stable ids: each takes the nearest box of the previous frame (within its size) and keeps that
    track's side, since a detector's handedness can flicker on one hand from frame to frame."""

    def __init__(self):
        self._previous: list[Detection] = []
        self._next_id = 0

    def assign(self, detections: list[Detection], previous: list[Detection] | None = None) -> list[Detection]:
        """Ids for `detections`, matched against `previous` (None: the last call's detections)."""
        free = list(self._previous if previous is None else previous)
        self._next_id = max([self._next_id] + [p.track_id + 1 for p in free])
        assigned = []
        for detection in sorted(detections, key=lambda d: -d.score):
            match = min(free, key=lambda p: _centre_distance(p, detection), default=None)
            if match is not None and _centre_distance(match, detection) < match.box.size:
                free.remove(match)
                assigned.append(replace(detection, track_id=match.track_id, is_left=match.is_left))
            else:
                assigned.append(replace(detection, track_id=self._next_id))
                self._next_id += 1
        self._previous = assigned
        return assigned


class MediaPipeDetector:
    """MediaPipe Hands (mediapipe 0.10.x `solutions.hands`, models shipped in the wheel): landmarks -> boxes."""

    name = "mediapipe"
    uses_feedback = False

    def __init__(self, max_hands: int = 2, video: bool = True, box_scale: float = DEFAULT_BOX_SCALE,
                 min_confidence: float = 0.5, is_left: bool | None = None):
        """is_left: the side given to every detection (None: mediapipe's handedness)."""
        warnings.filterwarnings("ignore", message=r"SymbolDatabase\.GetPrototype", category=UserWarning)  # protobuf 4
        try:
            from mediapipe.python.solutions import hands

            self._hands = hands.Hands(
                static_image_mode=not video, max_num_hands=max_hands, model_complexity=1,
                min_detection_confidence=min_confidence, min_tracking_confidence=min_confidence,
            )
        except Exception as error:  # noqa: BLE001 - ImportError, or a broken install (a model file missing, ...)
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise HandmeshError(
                f"mediapipe did not load ({type(error).__name__}: {first[:200]}); expected mediapipe==0.10.14 with its "
                f"models ({REINSTALL}), or use --detector tracker"
            ) from None
        self.box_scale = box_scale
        self.is_left = is_left
        self._matcher = TrackMatcher()
        self._started = False

    def detect(self, frame: np.ndarray) -> list[Detection]:
        """frame (H, W, 3) uint8 RGB -> up to max_hands detections, one per hand."""
        height, width = frame.shape[:2]
        if self._started:
            result = self._hands.process(np.ascontiguousarray(frame))
        else:
            with native_stderr_filtered():  # its models load on the first frame, with their start-up lines
                result = self._hands.process(np.ascontiguousarray(frame))
            self._started = True
        detections = []
        for landmarks, handedness in zip(result.multi_hand_landmarks or [], result.multi_handedness or []):
            points = np.array([(p.x * width, p.y * height) for p in landmarks.landmark])  # (21, 2) px
            best = handedness.classification[0]
            is_left = is_left_from_mediapipe(best.label) if self.is_left is None else self.is_left
            detections.append(Detection(Box.around(points, self.box_scale), is_left, best.score))
        assigned = self._matcher.assign(merge_overlapping(detections))
        return assigned if self.is_left is None else [replace(d, is_left=self.is_left) for d in assigned]

    def update(self, hands: list[HandEstimate]) -> None:
        """MediaPipe tracks by itself; the model's outputs are not needed."""

    def close(self) -> None:
        self._hands.close()


class BoxTracker:
    """One hand followed from the model's own 2D keypoints: next box = their bounding square, scaled.

    Starts (and restarts when the track is lost) from a centred box that the user puts the hand in; the app draws it.
    """

    name = "tracker"
    uses_feedback = True  # detect(frame t + 1) needs update(hands of frame t)

    def __init__(self, width: int, height: int, is_left: bool = False, box_scale: float = DEFAULT_BOX_SCALE):
        self.width, self.height = width, height
        self.is_left = is_left
        self.box_scale = box_scale
        self.start_box = Box((width - 1) / 2.0, (height - 1) / 2.0, START_BOX_FRACTION * min(width, height))
        self.box = self.start_box
        self.track_id = 0

    def detect(self, frame: np.ndarray) -> list[Detection]:
        return [Detection(self.box, self.is_left, 1.0, self.track_id)]

    def update(self, hands: list[HandEstimate]) -> None:
        """Move the box to the hand's predicted keypoints; back to the start box if none or implausible."""
        if not hands:
            self.reset()
            return
        box = Box.around(hands[0].keypoints_2d, self.box_scale)
        if not self._plausible(box):
            self.reset()
            return
        self.box = box

    def _plausible(self, box: Box) -> bool:
        return plausible_box(box, self.width, self.height)

    def reset(self) -> None:
        """Back to the start box, as a new track (its smoothing starts afresh)."""
        if self.box != self.start_box:
            self.track_id += 1
        self.box = self.start_box

    def close(self) -> None:
        """Nothing to release."""


def make_detector(kind: str, width: int, height: int, max_hands: int | None, hand: str = "auto", video: bool = True,
                  notify: Callable[[str], None] = lambda message: print(message, file=sys.stderr),
                  detect_every: int = 1):
    """`auto` picks mediapipe when it loads, else the tracker (saying why). max_hands None: 2 for mediapipe, 1 for
    the tracker. hand (HANDS): auto keeps mediapipe's handedness (the tracker follows a right hand); right or left is
    given to every detection. detect_every > 1: mediapipe runs every that many frames (or when a hand is lost) and the
    hands are followed from the model's keypoints in between (`DetectThenTrack`)."""
    from handmesh.demo.tracking import DetectThenTrack  # it builds on this module
    if kind not in DETECTORS:
        raise HandmeshError(f"unknown detector {kind!r}; expected one of {', '.join(DETECTORS)}")
    is_left = forced_side(hand)
    if kind == "mediapipe" and not mediapipe_available():
        raise HandmeshError(
            "--detector mediapipe needs mediapipe, which is not installed (it has wheels for CPython 3.9-3.12 on "
            "x86_64 and arm64): run `pip install mediapipe==0.10.14`, or use --detector tracker"
        )
    if kind == "mediapipe" or (kind == "auto" and mediapipe_available()):
        try:
            if detect_every == 1:
                return MediaPipeDetector(max_hands=max_hands or 2, video=video, is_left=is_left)
            # frames far apart: each on its own
            detector = MediaPipeDetector(max_hands=max_hands or 2, video=False, is_left=is_left)
            return DetectThenTrack(detector, width, height, every=detect_every, max_hands=max_hands or 2)
        except HandmeshError as error:
            if kind == "mediapipe":
                raise
            notify(f"warning: detector: falling back to the box tracker: {error}")
    if max_hands not in (None, 1):
        raise HandmeshError(
            f"--max-hands {max_hands} with the box tracker: it follows one hand; expected --max-hands 1, "
            "or use mediapipe (--detector mediapipe, mediapipe==0.10.14) for several hands"
        )
    return BoxTracker(width, height, is_left=bool(is_left))
