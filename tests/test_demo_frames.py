"""FrameProcessor: the demo's stages for one frame at a time (what a web front end calls), on a generated clip."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from handmesh.demo.detect import mediapipe_available
from handmesh.demo.frames import FrameProcessor
from handmesh.demo.synthetic import write_synthetic_clip
from handmesh.errors import HandmeshError
from handmesh.inference import Predictor

torch.set_num_threads(2)
W, H = 320, 240


@pytest.fixture(scope="module")
def frames(tmp_path_factory, standin_dir) -> list[np.ndarray]:
    clip = write_synthetic_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", standin_dir, frames=4, width=W,
                                height=H, fill=0.6)
    capture, images = cv2.VideoCapture(str(clip.path)), []
    while (read := capture.read())[0]:
        images.append(cv2.cvtColor(read[1], cv2.COLOR_BGR2RGB))
    return images


@pytest.mark.parametrize("detector", ["tracker", "mediapipe"])
def test_each_frame_gives_the_overlay_the_hands_and_the_stage_times(frames, standin_dir, detector):
    if detector == "mediapipe" and not mediapipe_available():
        pytest.skip("mediapipe has no wheel for this Python or platform")
    processor = FrameProcessor(Predictor.untrained(mano_dir=standin_dir), W, H, detector=detector, detect_every=2,
                               renderer="opencv")
    try:
        results = [processor.process(frame) for frame in frames]
    finally:
        processor.close()
        processor.close()  # a second close does nothing
    for frame, result in zip(frames, results):
        (hand,) = result.hands
        assert result.image.shape == (H, W, 3) and result.image.dtype == np.uint8
        assert (result.image != frame).any()  # the mesh is drawn
        assert hand.vertices.shape == (778, 3) and hand.keypoints_2d.shape == (21, 2)
        assert set(result.timings_ms) == {"detect", "infer", "render"}
    assert len({r.hands[0].track_id for r in results}) == 1  # one track throughout


def test_a_frame_of_another_size_is_a_clear_error(frames, standin_dir):
    processor = FrameProcessor(Predictor.untrained(mano_dir=standin_dir), W + 2, H, detector="tracker",
                               renderer="opencv")
    with pytest.raises(HandmeshError, match="make one FrameProcessor per frame size"):
        processor.process(frames[0])
    processor.close()
