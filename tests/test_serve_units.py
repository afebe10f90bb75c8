"""The browser demo's parts without a server: upload checks, the live stream one frame behind, the results' files."""

import json
import threading
import time

import cv2
import numpy as np
import pytest
import torch
import trimesh

import handmesh.inference  # noqa: F401 - loads timm (and triton's LLVM) before Mesa's: the reverse order segfaults
from handmesh.demo.synthetic import write_synthetic_clip
from handmesh.errors import HandmeshError
from handmesh.serve.files import UploadError, check_video, decode_image, write_keypoints_json, write_meshes
from handmesh.serve.frames import Controls, FrameSession, GLWorker
from handmesh.serve.live import LiveAnswer, LiveBusy, LiveSessions, LiveStream
from handmesh.serve.live_page import parse_controls

torch.set_num_threads(2)
W, H = 160, 120


@pytest.fixture(scope="module")
def predictor(standin_dir):
    from handmesh.inference import Predictor

    return Predictor.untrained(mano_dir=standin_dir)


@pytest.fixture(scope="module")
def frames(tmp_path_factory, standin_dir) -> list[np.ndarray]:
    path = tmp_path_factory.mktemp("units") / "clip.mp4"
    write_synthetic_clip(path, standin_dir, frames=6, width=W, height=H)
    capture = cv2.VideoCapture(str(path))
    images = []
    while (read := capture.read())[0]:
        images.append(cv2.cvtColor(read[1], cv2.COLOR_BGR2RGB))
    return images


@pytest.fixture()
def gl():
    worker = GLWorker("opencv")  # no GL context here: other test files own the process's one
    yield worker
    worker.close()


def test_decode_image_refuses_what_is_not_an_image_or_too_large(tmp_path):
    text = tmp_path / "a.png"
    text.write_text("hello")
    with pytest.raises(UploadError, match="not an image"):
        decode_image({"path": str(text)}, 10**6)
    large = tmp_path / "large.png"
    cv2.imwrite(str(large), np.zeros((1200, 1000, 3), np.uint8))
    with pytest.raises(UploadError, match="1000x1200"):
        decode_image({"path": str(large)}, 10**6)
    truncated = tmp_path / "cut.jpg"
    ok, jpeg = cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8))
    truncated.write_bytes(jpeg.tobytes()[:200])
    with pytest.raises(UploadError):
        decode_image({"path": str(truncated)}, 10**6)
    with pytest.raises(UploadError, match="no image"):
        decode_image(None, 10**6)
    image = tmp_path / "ok.png"
    cv2.imwrite(str(image), np.dstack([np.full((8, 9), v, np.uint8) for v in (10, 20, 30)]))  # BGR on disk
    assert decode_image({"path": str(image)}, 10**6)[0, 0].tolist() == [30, 20, 10]  # RGB out


def test_check_video_refuses_long_and_broken_clips(tmp_path):
    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (32, 24))
    for index in range(20):
        writer.write(np.full((24, 32, 3), index * 10, np.uint8))
    writer.release()
    assert check_video(path, 5.0, 64) == (20, 10.0)
    with pytest.raises(UploadError, match="lasts 2.0 s"):
        check_video(path, 1.0, 64)
    with pytest.raises(UploadError, match="32x24"):
        check_video(path, 5.0, 16)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UploadError, match="cannot decode|not a video"):
        check_video(broken, 5.0, 64)


def test_live_stream_answers_each_frame_with_the_previous_one(predictor, frames, gl):
    stream = LiveStream(predictor, gl, Controls(detector="tracker"), W, H)
    try:
        assert stream.submit(frames[0]) is None  # nothing finished yet
        for index, image in enumerate(frames[1:], start=1):
            time.sleep(0.3)  # the browser's round trip: the pipeline takes the frame meanwhile
            packet = stream.submit(image)
            assert packet is not None and packet.frame.index == index - 1
            assert packet.image.shape == (H, W, 3) and len(packet.hands) == 1
            assert "capture" not in packet.timings_ms and set(packet.timings_ms) >= {"detect", "infer", "render"}
        answered = [stream.submit(image) for image in frames]  # no pause: a frame not yet taken is replaced
        indices = [packet.frame.index for packet in answered if packet is not None]
        assert indices == sorted(set(indices))
        time.sleep(0.5)
        packet = stream.submit(frames[0])
        assert packet is not None and packet.frame.index == 2 * len(frames) - 1, "the newest frame, not a stale one"
        assert stream.fits(Controls(detector="tracker", smoothing=False), W, H)
        assert not stream.fits(Controls(detector="tracker"), W + 2, H)
    finally:
        stream.close()
    assert not [t.name for t in threading.enumerate() if t.name.startswith("demo-")], "the pipeline's threads ended"
    assert not stream.fits(Controls(detector="tracker"), W, H), "a closed stream is not reused"


def test_live_sessions_keep_their_limits(predictor, frames, gl):
    """At most `limit` streams at once (a stopped one frees its slot), each for at most max_seconds."""
    data = cv2.imencode(".jpg", cv2.cvtColor(frames[0], cv2.COLOR_RGB2BGR))[1].tobytes()
    controls = Controls(detector="tracker")
    sessions = LiveSessions(predictor, gl, ["model"], limit=1, max_seconds=60.0, max_pixels=10**7)
    try:
        assert sessions.frame("page-one", data, controls) == LiveAnswer(None, "starting")
        time.sleep(0.5)
        answer = sessions.frame("page-one", data, controls)
        assert answer.overlay.shape == (H, W, 3) and answer.status.startswith("frame 1: 1 hand(s), mesh drawn")
        with pytest.raises(LiveBusy, match="busy: 1 live stream"):
            sessions.frame("page-two", data, controls)
        sessions.stop("page-one")
        assert sessions.frame("page-two", data, controls).overlay is None, "the stopped stream's slot is free"
        sessions.max_seconds = 0.0
        with pytest.raises(HandmeshError, match="--live-seconds"):
            sessions.frame("page-two", data, controls)
        with pytest.raises(HandmeshError, match="not an image"):
            sessions.frame("page-three", b"GIF89a nonsense", controls)
    finally:
        sessions.close()
    assert not [t.name for t in threading.enumerate() if t.name.startswith("demo-")], "every pipeline ended"


def test_live_controls_from_the_query_are_checked():
    assert parse_controls({"detector": "tracker", "smoothing": "0", "view": "skeleton", "max_hands": "3"}) == \
        Controls(detector="tracker", smoothing=False, view="skeleton", max_hands=3)
    for bad in ({"detector": "yolo"}, {"view": "wireframe"}, {"max_hands": "9"}, {"max_hands": "two"}):
        with pytest.raises(HandmeshError, match="expected"):
            parse_controls(bad)


def test_still_image_outputs(predictor, frames, gl, tmp_path):
    session = FrameSession(predictor, gl, Controls(detector="tracker", smoothing=False), W, H, video=False)
    packet = session.process(frames[0], 0.0, passes=session.still_passes())
    session.close()
    assert session.still_passes() > 1 and len(packet.hands) == 1
    paths = write_meshes(tmp_path, packet.hands)
    assert [p.name for p in paths] == ["hands.glb", "right0.obj", "right0.ply"]
    glb = trimesh.load(paths[0])
    (mesh,) = glb.geometry.values()
    # glTF's axes: y up, z towards the viewer; the camera frame's: y down, z forward
    assert np.allclose(mesh.vertices, packet.hands[0].vertices * [1, -1, -1], atol=1e-5)
    path = write_keypoints_json(tmp_path / "hands.json", packet.hands, session.K, (W, H), "model", [{"betas": [0]}])
    record = json.loads(path.read_text())
    assert record["image_size"] == [W, H] and record["hands"][0]["mano"] == {"betas": [0]}
    assert np.allclose(record["hands"][0]["keypoints_3d"], packet.hands[0].keypoints_3d, atol=1e-6)
