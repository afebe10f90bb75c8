"""Detect, then track: MediaPipe every N frames or when a hand is lost, the hands followed from their keypoints in
between; on generated clips of a hand that moves and leaves the frame, and of a second hand that enters. The
followed keypoints are the clip's true ones (what a perfect model would predict), so the hand-over itself is tested."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

import handmesh.inference  # noqa: F401 - loads timm (and triton's LLVM) before Mesa's: the reverse order segfaults
from handmesh.demo.app import main
from handmesh.demo.crop import DEFAULT_BOX_SCALE, Box, HandEstimate
from handmesh.demo.detect import Detection, mediapipe_available
from handmesh.demo.synthetic import write_synthetic_clip
from handmesh.demo.tracking import DetectThenTrack

pytestmark = pytest.mark.skipif(not mediapipe_available(), reason="mediapipe has no wheel for this Python or platform")
W, H = 640, 480
EVERY = 4


def frames_of(path) -> list[np.ndarray]:
    capture, frames = cv2.VideoCapture(str(path)), []
    while (read := capture.read())[0]:
        frames.append(cv2.cvtColor(read[1], cv2.COLOR_BGR2RGB))
    return frames


def estimate(keypoints_2d: np.ndarray, detection: Detection) -> HandEstimate:
    return HandEstimate(np.zeros((778, 3), np.float32), np.zeros((1538, 3), np.int64), np.zeros((21, 3), np.float32),
                        keypoints_2d.astype(np.float32), detection.box, detection.is_left, detection.track_id)


def tracker(max_hands: int = 2) -> DetectThenTrack:
    from handmesh.demo.detect import MediaPipeDetector

    return DetectThenTrack(MediaPipeDetector(max_hands=max_hands, video=False), W, H, every=EVERY, max_hands=max_hands)


@pytest.fixture(scope="module")
def leaving(tmp_path_factory, standin_dir):
    """16 frames: the hand crosses to the right and is wholly out of the frame from frame 10 on."""
    return write_synthetic_clip(tmp_path_factory.mktemp("clip") / "leaving.mp4", standin_dir, frames=16, width=W,
                                height=H, fill=0.4, path_x=(-0.1, 1.0))


def test_hand_over_between_detections_and_tracking_until_the_hand_leaves(leaving):
    follow = tracker()
    truth = leaving.keypoints_2d  # (16, 21, 2) px
    shown = []
    try:
        for index, frame in enumerate(frames_of(leaving.path)):
            detections = follow.detect(frame)
            shown.append(detections)
            follow.update([estimate(truth[index], d) for d in detections])
    finally:
        follow.close()
    gone = [i for i in range(len(truth)) if truth[i, :, 0].min() >= W]  # every keypoint right of the frame
    lost = next(i for i in range(len(truth)) if Box.around(truth[i]).cx >= W)  # the followed box leaves the frame
    assert gone and gone[-1] == len(truth) - 1
    # while followed: detected on frames 0, 4, 8, ...; in between, the box is the one around the last keypoints
    assert [i for i in follow.detected_frames if i <= lost] == list(range(0, lost + 1, EVERY))
    for index in range(1, lost + 1):
        (detection,) = shown[index]
        if index % EVERY:
            expected = Box.around(truth[index - 1].astype(np.float32), DEFAULT_BOX_SCALE)
            np.testing.assert_allclose(detection.box.as_array(), expected.as_array(), rtol=1e-6)
        else:
            box = Box.around(truth[index])  # MediaPipe's own landmarks: a box as tight as the keypoints'
            assert abs(detection.box.cx - box.cx) < 0.1 * box.size and 0.8 < detection.box.size / box.size < 1.25
    # lost: the detector runs on the next frame and on every frame after while no hand is found
    assert all(i in follow.detected_frames for i in range(lost + 1, len(truth)))
    assert all(shown[i] == [] for i in gone)


@pytest.fixture(scope="module")
def two_hands(tmp_path_factory, standin_dir):
    """12 frames: a hand right of centre throughout; a hand of the other side on the left from frame 5 on."""
    return write_synthetic_clip(tmp_path_factory.mktemp("clip") / "two.mp4", standin_dir, frames=12, width=W,
                                height=H, fill=0.4, path_x=(0.15, 0.2), second_hand_from=5, second_x=-0.4)


def test_a_second_hand_entering_is_found_at_the_next_detection(two_hands):
    follow = tracker()
    counts, ids = [], []
    try:
        for index, frame in enumerate(frames_of(two_hands.path)):
            detections = follow.detect(frame)
            counts.append(len(detections))
            ids.append({d.track_id for d in detections})
            hands = []
            for detection in detections:  # feed back the true keypoints of the hand each box is on
                options = [k for k in (two_hands.keypoints_2d[index], two_hands.second_keypoints_2d[index])
                           if np.isfinite(k).all()]
                hands.append(estimate(min(options, key=lambda k: abs(Box.around(k).cx - detection.box.cx)), detection))
            follow.update(hands)
    finally:
        follow.close()
    assert counts[:5] == [1] * 5  # one hand until the second enters
    entered = 8  # the first detection with the second hand in view (frames 0, 4, 8)
    assert counts[5:entered] == [1] * (entered - 5) and counts[entered:] == [2] * (len(counts) - entered)
    assert len(ids[entered]) == 2 and ids[entered] == ids[-1]  # two tracks, kept while followed


def test_demo_run_detects_every_n_frames_and_writes_its_stats(leaving, standin_dir, tmp_path, monkeypatch):
    # an untrained model, whatever runs/ holds
    monkeypatch.setattr("handmesh.demo.app.DEFAULT_CHECKPOINT", tmp_path / "none.ckpt")
    stats_path = tmp_path / "stats.json"
    code = main(["--source", str(leaving.path), "--no-window", "--mano-dir", str(standin_dir), "--engine", "torch",
                 "--detect-every", str(EVERY), "--out", str(tmp_path / "out.mp4"), "--stats-json", str(stats_path)])
    assert code == 0
    stats = json.loads(stats_path.read_text())
    assert stats["frames"] == 16 and len(stats["hands_per_frame"]) == 16 and stats["steady_fps"] > 0
    assert set(stats["stage_ms"]) == {"capture", "detect", "infer", "render"}
    assert stats["detector"] == "mediapipe" and stats["detect_every"] == EVERY and stats["engine"] == "torch"
    assert stats["model"]["encoder"] == "fastvit_t8" and stats["model"]["input_size"] == 128
    assert stats["hands_per_frame"][0] == 1 and stats["hands_per_frame"][-1] == 0
    assert stats["detector_frames"] < 16
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # written atomically: no temporary left


def test_photos_are_each_detected_on_their_own(leaving, standin_dir, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for index, frame in enumerate(frames_of(leaving.path)[:3]):
        cv2.imwrite(str(folder / f"{index}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    stats_path = tmp_path / "stats.json"
    assert main(["--source", str(folder), "--no-window", "--mano-dir", str(standin_dir), "--engine", "torch",
                 "--out", str(tmp_path / "out.mp4"), "--stats-json", str(stats_path)]) == 0
    stats = json.loads(stats_path.read_text())
    assert stats["detect_every"] == 1 and stats["hands_per_frame"] == [1, 1, 1]
