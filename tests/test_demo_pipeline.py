"""The threaded pipeline: files keep every frame in order, a live source drops stale frames, stage errors surface."""

from pathlib import Path

import numpy as np
import pytest
import torch

from handmesh.demo.capture import VideoSource
from handmesh.demo.crop import frame_intrinsics
from handmesh.demo.detect import BoxTracker
from handmesh.demo.overlay import OverlayRenderer
from handmesh.demo.pipeline import HandReconstructor, LiveSettings, Pipeline
from handmesh.demo.synthetic import write_synthetic_clip
from handmesh.inference import Predictor

torch.set_num_threads(1)
W, H, FRAMES = 160, 120, 24


class LiveClip(VideoSource):
    """A video file read as if it were a camera: frames come as fast as they decode, and may be dropped."""

    is_live = True


@pytest.fixture(scope="module")
def clip(tmp_path_factory, standin_dir) -> Path:
    return write_synthetic_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", standin_dir, frames=FRAMES, width=W,
                                height=H).path


@pytest.fixture(scope="module")
def predictor(standin_dir) -> Predictor:
    return Predictor.untrained(input_size=64, mano_dir=standin_dir)


def run_pipeline(source, predictor, reconstructor_predictor=None) -> tuple[list, Pipeline]:
    K = frame_intrinsics(source.width, source.height)
    settings = LiveSettings()
    reconstructor = HandReconstructor(reconstructor_predictor or predictor, K, settings)
    pipeline = Pipeline(source, BoxTracker(source.width, source.height), reconstructor,
                        lambda: OverlayRenderer(source.width, source.height, K, "opencv"), settings).start()
    packets = []
    try:
        while (packet := pipeline.get()) is not None:
            packets.append(packet)
    finally:
        pipeline.stop()
        source.close()
    return packets, pipeline


def test_a_file_keeps_every_frame_in_order(clip, predictor):
    packets, pipeline = run_pipeline(VideoSource(clip), predictor)
    assert [p.frame.index for p in packets] == list(range(FRAMES))
    assert pipeline.dropped == 0
    assert all(p.image.shape == (H, W, 3) and len(p.hands) == 1 for p in packets)
    assert all(set(p.timings_ms) == {"capture", "detect", "infer", "render"} for p in packets)


def test_a_live_source_drops_stale_frames_and_loses_no_other(clip, predictor):
    packets, pipeline = run_pipeline(LiveClip(clip), predictor)
    indices = [p.frame.index for p in packets]
    assert indices == sorted(set(indices))  # in order, no repeats
    assert pipeline.dropped > 0  # decoding outruns inference
    assert len(indices) + pipeline.dropped == FRAMES  # every frame was shown or dropped as stale


class Failing:
    """Predictor attributes with a predict that fails on the third call, as a broken model would."""

    def __init__(self, predictor):
        self.input_size, self.faces = predictor.input_size, predictor.faces
        self._predictor, self.calls = predictor, 0

    def predict(self, crops, K):
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("model failed")
        return self._predictor.predict(crops, K)


def test_a_stage_error_stops_everything_and_is_raised_in_the_caller(clip, predictor):
    with pytest.raises(RuntimeError, match="model failed"):
        run_pipeline(VideoSource(clip), predictor, Failing(predictor))


def test_no_detection_gives_the_raw_frame(clip, predictor):
    source = VideoSource(clip)
    frame = source.read()
    K = frame_intrinsics(W, H)
    reconstructor = HandReconstructor(predictor, K, LiveSettings())
    assert reconstructor(frame, []) == []
    renderer = OverlayRenderer(W, H, K, "opencv")
    np.testing.assert_array_equal(renderer.draw(frame.image, [], LiveSettings().view), frame.image)
    source.close()
