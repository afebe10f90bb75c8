"""Detect, then track: a hand detector every N frames (or when a hand is lost), the model's own keypoints between.

A detection costs a palm detector and a landmark network; following a hand costs nothing beyond the model run the
frame needs anyway: the next frame's box is the square around the hand's predicted 2D keypoints (as the box
tracker does for one hand). The detector runs again

  * every `every` frames, so that a hand that enters is found and a track that drifted is put right;
  * on the frame after a track is lost: its next box would be implausibly small or large, or centred outside the frame;
  * on every frame while no hand is followed.

Each detection's side (handedness) comes from the detector and stays with its track; the detector's boxes come from
its own 21 landmarks (a tight box, the same framing as the model's keypoints give). Detections keep the id of the
followed hand they land on (`TrackMatcher`), so smoothing continues across a detection. Two followed hands whose boxes
come to overlap (by more than `MERGE_IOU`) are one hand: the one with the higher score goes on.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from handmesh.demo.crop import DEFAULT_BOX_SCALE, Box, HandEstimate
from handmesh.demo.detect import Detection, TrackMatcher, merge_overlapping, plausible_box

DEFAULT_DETECT_EVERY = 8  # frames between detections while hands are followed


class DetectThenTrack:
    """Wraps a detector (`detect(frame) -> [Detection]`, `close()`); `update(hands)` feeds back each frame's hands."""

    uses_feedback = True  # detect(frame t + 1) needs update(hands of frame t): runs in the infer stage

    def __init__(self, detector, width: int, height: int, every: int = DEFAULT_DETECT_EVERY,
                 max_hands: int = 2, box_scale: float = DEFAULT_BOX_SCALE):
        if every < 1:
            raise ValueError(f"every: expected at least 1 frame, got {every}")
        self.detector = detector
        self.name = detector.name
        self.width, self.height = width, height
        self.every, self.max_hands, self.box_scale = every, max_hands, box_scale
        self.tracks: list[Detection] = []  # the hands followed now, with the boxes for the next frame
        self.detected_frames: list[int] = []  # indices of the frames the detector ran on
        self._frame = -1
        self._last_detection = -every
        self._lost = False
        self._matcher = TrackMatcher()

    def due(self) -> bool:
        """Whether the detector runs on the next frame."""
        return not self.tracks or self._lost or self._frame + 1 - self._last_detection >= self.every

    def detect(self, frame: np.ndarray) -> list[Detection]:
        """frame (H, W, 3) uint8 RGB -> the hands to crop in it: detected, or followed from the previous frame."""
        if self.due():
            self._frame += 1
            self._last_detection, self._lost = self._frame, False
            self.detected_frames.append(self._frame)
            found = self.detector.detect(frame)[: self.max_hands]
            self.tracks = self._matcher.assign(found, previous=self.tracks)
        else:
            self._frame += 1
        return list(self.tracks)

    def update(self, hands: list[HandEstimate]) -> None:
        """Move each followed hand's box to its predicted keypoints; drop the hands whose box is implausible, and all
        but one of boxes that overlap (one hand)."""
        by_id = {hand.track_id: hand for hand in hands}
        kept = []
        for track in self.tracks:
            hand = by_id.get(track.track_id)
            box = Box.around(hand.keypoints_2d, self.box_scale) if hand is not None else None
            if box is None or not plausible_box(box, self.width, self.height):
                self._lost = True
                continue
            kept.append(replace(track, box=box))
        self.tracks = sorted(merge_overlapping(kept), key=lambda track: track.track_id)

    def close(self) -> None:
        self.detector.close()
