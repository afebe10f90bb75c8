"""Hand finding: the box tracker, track ids, the mediapipe handedness convention (and mediapipe itself when
installed)."""

import os
from dataclasses import replace

import numpy as np
import pytest

from handmesh.demo.crop import DEFAULT_BOX_SCALE, Box, HandEstimate
from handmesh.demo.detect import (
    MERGE_IOU,
    NATIVE_NOISE,
    BoxTracker,
    Detection,
    TrackMatcher,
    box_iou,
    is_left_from_mediapipe,
    make_detector,
    mediapipe_available,
    merge_overlapping,
    native_stderr_filtered,
)
from handmesh.demo.tracking import DetectThenTrack
from handmesh.errors import HandmeshError

W, H = 640, 480


def estimate(keypoints_2d: np.ndarray) -> HandEstimate:
    return HandEstimate(np.zeros((778, 3), np.float32), np.zeros((1538, 3), np.int64), np.zeros((21, 3), np.float32),
                        keypoints_2d.astype(np.float32), Box(0, 0, 1), is_left=False)


def square_keypoints(cx: float, cy: float, half: float) -> np.ndarray:
    """(21, 2): points spread over [cx - half, cx + half] x [cy - half / 2, cy + half / 2]."""
    t = np.linspace(-1, 1, 21)
    return np.stack([cx + half * t, cy + 0.5 * half * np.sin(7 * t)], axis=1)


def test_tracker_starts_centred_and_follows_the_keypoints():
    tracker = BoxTracker(W, H)
    assert tracker.detect(np.zeros((H, W, 3), np.uint8)) == [Detection(Box(319.5, 239.5, 288.0), False, 1.0, 0)]
    keypoints = square_keypoints(300, 200, 50)  # extent 100 px wide
    tracker.update([estimate(keypoints)])
    (detection,) = tracker.detect(np.zeros((H, W, 3), np.uint8))
    low, high = keypoints.min(0), keypoints.max(0)
    assert detection.box == Box(*((low + high) / 2), 100 * DEFAULT_BOX_SCALE)
    assert detection.track_id == 0  # same track while it follows


@pytest.mark.parametrize("keypoints", [
    square_keypoints(300, 200, 5),  # 10 px: lost (smaller than 8 % of 480)
    square_keypoints(700, 200, 50),  # centre outside the frame
    square_keypoints(300, 200, 1000),  # far too large
    np.full((21, 2), np.nan),
])
def test_tracker_resets_to_the_start_box_when_the_hand_is_lost(keypoints):
    tracker = BoxTracker(W, H, is_left=True)
    tracker.update([estimate(square_keypoints(300, 200, 50))])
    tracker.update([estimate(keypoints)])
    (detection,) = tracker.detect(np.zeros((H, W, 3), np.uint8))
    assert detection.box == tracker.start_box and detection.is_left
    assert detection.track_id == 1  # a new track: its smoothing starts afresh


def test_tracker_with_no_hand_goes_back_to_start():
    tracker = BoxTracker(W, H)
    tracker.update([estimate(square_keypoints(300, 200, 50))])
    tracker.update([])
    assert tracker.box == tracker.start_box


def test_track_matcher_keeps_ids_and_sides_for_nearby_boxes():
    matcher = TrackMatcher()
    first = matcher.assign([Detection(Box(100, 100, 80), False, 0.9), Detection(Box(400, 100, 80), True, 0.8)])
    assert [d.track_id for d in first] == [0, 1]
    moved = matcher.assign([Detection(Box(410, 110, 80), True, 0.9), Detection(Box(120, 90, 80), False, 0.7)])
    assert {(d.is_left, d.track_id) for d in moved} == {(True, 1), (False, 0)}
    # Same place, the detector's handedness flipped: the same hand, which keeps its side (one mesh per hand).
    flickered = matcher.assign([Detection(Box(410, 110, 80), False, 0.9)])
    assert (flickered[0].track_id, flickered[0].is_left) == (1, True)
    far = matcher.assign([Detection(Box(600, 400, 80), False, 0.9)])
    assert (far[0].track_id, far[0].is_left) == (2, False)


def test_box_iou():
    assert box_iou(Box(50, 50, 20), Box(50, 50, 20)) == 1.0
    assert box_iou(Box(50, 50, 20), Box(80, 50, 20)) == 0.0
    assert box_iou(Box(50, 50, 20), Box(60, 50, 20)) == pytest.approx(200 / 600)  # half of each: 1/3
    assert box_iou(Box(50, 50, 20), Box(50, 50, 10)) == pytest.approx(0.25)  # one inside the other


def test_a_left_and_a_right_box_on_one_hand_become_one_hand_of_the_side_scored_higher():
    right = Detection(Box(300, 200, 100), False, 0.62)
    left = Detection(Box(306, 196, 104), True, 0.81)  # the same hand, called left with more confidence
    assert box_iou(right.box, left.box) > MERGE_IOU
    assert merge_overlapping([right, left]) == [left]
    assert merge_overlapping([replace(right, score=0.9), left]) == [replace(right, score=0.9)]
    apart = Detection(Box(500, 200, 100), True, 0.7)  # another hand
    touching = Detection(Box(370, 200, 100), True, 0.7)  # overlapping a little: IoU 0.18, two hands
    assert merge_overlapping([right, apart]) == [apart, right]  # highest score first
    assert len(merge_overlapping([right, touching])) == 2


def test_followed_hands_that_converge_on_one_hand_become_one():
    class Scripted:
        """A detector that finds two hands once (what mediapipe gives on two hands)."""
        name = "scripted"

        def detect(self, frame):
            return [Detection(Box(200, 200, 100), False, 0.9), Detection(Box(420, 200, 100), True, 0.8)]

        def close(self):
            pass

    follow = DetectThenTrack(Scripted(), W, H, every=100)
    first = follow.detect(np.zeros((H, W, 3), np.uint8))
    assert len(first) == 2
    # both models' keypoints land on the same hand (one track slid onto the other)
    hands = [replace(estimate(square_keypoints(300, 200, 25)), track_id=d.track_id) for d in first]
    follow.update(hands)
    (kept,) = follow.detect(np.zeros((H, W, 3), np.uint8))
    assert kept.track_id == first[0].track_id  # the higher score goes on


@pytest.mark.parametrize("hand, expected", [("auto", False), ("right", False), ("left", True)])
def test_hand_option_sets_the_tracker_side(hand, expected):
    tracker = make_detector("tracker", W, H, None, hand=hand, video=True)
    assert tracker.detect(np.zeros((H, W, 3), np.uint8))[0].is_left is expected


def test_unknown_hand_is_refused():
    with pytest.raises(HandmeshError, match="auto, right, left"):
        make_detector("tracker", W, H, None, hand="both", video=True)


def test_native_start_up_noise_is_dropped_and_everything_else_kept(capfd):
    noise = [
        "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "W0000 00:00:1796549907.978928   30550 inference_feedback_manager.cc:114] Feedback manager requires a model "
        "with a single signature inference. Disabling support for feedback tensors.",
    ]
    assert all(any(pattern.fullmatch(line + "\n") for pattern in NATIVE_NOISE) for line in noise)
    real = "E0000 00:00:1796549907.978928   30550 calculator_graph.cc:887] INTERNAL: model file is corrupt"
    bar = "\r  0%|          | 0/12 [00:00<?, ?frame/s]"  # a progress bar drawn meanwhile, with no newline
    with native_stderr_filtered():
        os.write(2, (bar + "\n".join(noise[:2] + [real] + noise[2:]) + "\n").encode())
    err = capfd.readouterr().err
    assert err == bar + real + "\n"


@pytest.mark.skipif(not mediapipe_available(), reason="mediapipe has no wheel for this Python or platform")
@pytest.mark.parametrize("hand", ["auto", "right", "left"])
def test_mediapipe_gives_one_detection_per_hand_on_the_stand_in_clip_with_forced_sides(stand_in_clip, hand, capfd):
    frames, clip = stand_in_clip
    detector = make_detector("mediapipe", W, H, 2, hand=hand, video=True)
    try:
        found = [detector.detect(frame) for frame in frames]
    finally:
        detector.close()
    assert all(len(detections) <= 1 for detections in found)  # one hand in the clip: never a second mesh on it
    assert sum(len(detections) for detections in found) >= len(frames) - 1
    if hand != "auto":
        assert all(d.is_left is (hand == "left") for detections in found for d in detections)
    err = capfd.readouterr().err
    assert "Feedback manager" not in err and "XNNPACK" not in err


@pytest.fixture(scope="module")
def stand_in_clip(tmp_path_factory, standin_dir):
    """Six frames of the stand-in right hand (640 x 480), RGB."""
    import cv2

    from handmesh.demo.synthetic import write_synthetic_clip

    clip = write_synthetic_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", standin_dir, frames=6, width=W,
                                height=H, fill=0.6)
    capture, frames = cv2.VideoCapture(str(clip.path)), []
    while (read := capture.read())[0]:
        frames.append(cv2.cvtColor(read[1], cv2.COLOR_BGR2RGB))
    return frames, clip


def test_mediapipe_handedness_label_is_for_the_mirrored_image():
    assert is_left_from_mediapipe("Right") and not is_left_from_mediapipe("Left")


def test_make_detector_choices():
    assert isinstance(make_detector("tracker", W, H, None, video=True), BoxTracker)
    with pytest.raises(HandmeshError, match="max-hands 2"):
        make_detector("tracker", W, H, 2, video=True)
    with pytest.raises(HandmeshError, match="expected one of"):
        make_detector("yolo", W, H, None, video=True)
    if not mediapipe_available():
        assert isinstance(make_detector("auto", W, H, None, video=True), BoxTracker)
        with pytest.raises(HandmeshError, match="pip install"):
            make_detector("mediapipe", W, H, None, video=True)


@pytest.mark.skipif(not mediapipe_available(), reason="mediapipe has no wheel for this Python or platform")
def test_mediapipe_finds_a_rendered_hand_and_frames_it_like_the_tracker(tmp_path, standin_dir):
    """Its handedness is not checked here: on the stand-in hand (not a real one) mediapipe's classifier is unsure
    (scores about 0.6, and it flips with the background); the label convention follows mediapipe's documentation."""
    from handmesh.demo.detect import MediaPipeDetector
    from handmesh.demo.synthetic import write_synthetic_clip
    clip = write_synthetic_clip(tmp_path / "clip.mp4", standin_dir, frames=1, width=W, height=H,
                                fill=0.6)
    import cv2

    ok, frame = cv2.VideoCapture(str(clip.path)).read()
    frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    detector = MediaPipeDetector(max_hands=2, video=False)
    try:
        assert detector.detect(np.zeros((H, W, 3), np.uint8)) == []
        (hand,) = detector.detect(frame)
        truth = Box.around(clip.keypoints_2d[0])
        assert abs(hand.box.cx - truth.cx) < 0.1 * truth.size and abs(hand.box.cy - truth.cy) < 0.1 * truth.size
        assert 0.8 < hand.box.size / truth.size < 1.25
    finally:
        detector.close()


@pytest.mark.skipif(not mediapipe_available(), reason="mediapipe has no wheel for this Python or platform")
def test_a_broken_mediapipe_install_falls_back_to_the_tracker_with_one_line(monkeypatch):
    from mediapipe.python.solutions import hands

    def missing_model(**options):
        raise FileNotFoundError("hand_landmark_full.tflite: no such file")  # what a wheel without its models gives

    monkeypatch.setattr(hands, "Hands", missing_model)
    messages = []
    detector = make_detector("auto", W, H, None, video=True, notify=messages.append)
    assert isinstance(detector, BoxTracker)
    assert len(messages) == 1 and "\n" not in messages[0] and "hand_landmark_full.tflite" in messages[0]
    with pytest.raises(HandmeshError, match="--detector tracker"):
        make_detector("mediapipe", W, H, None, video=True)
