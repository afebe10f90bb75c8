"""`handmesh serve` end to end: a real server on 127.0.0.1 (a free port), called with gradio_client and driven in
Debian's chromium with a fake camera playing a generated clip of the stand-in hand."""

import json
import os
import signal
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import trimesh

from handmesh.demo.synthetic import write_synthetic_clip
from handmesh.serve.browser import (
    chromium_path,
    fake_camera_page,
    live_overlay,
    live_status,
    running_server,
    start_live,
    stop_live,
    wait_for_frames,
    write_y4m,
)
from handmesh.serve.live_page import FRAME_ROUTE, STATUS_HEADER

pytest.importorskip("gradio_client", reason="gradio_client comes with gradio (`pip install -e .`)")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
W, H, FRAMES = 480, 360, 10
GLOVE = (0.2, 0.35, 0.9)  # the clip's hand is blue, so the skin-coloured overlay changes pixels
MAX_VIDEO_SECONDS = 0.5  # the server's limit in these tests: the clip (10 frames at 30 fps) fits, a longer one not
MAX_UPLOAD_MB = 4
SCREENSHOT_ENV = "HANDMESH_SERVE_SCREENSHOT"  # set to 1 to write demo/assets/serve.png


@pytest.fixture(scope="module")
def clip(tmp_path_factory, standin_dir):
    return write_synthetic_clip(tmp_path_factory.mktemp("serve_clip") / "clip.mp4", standin_dir, frames=FRAMES,
                                width=W, height=H, colour=GLOVE)


@pytest.fixture(scope="module")
def server(tmp_path_factory, standin_dir):
    """`handmesh serve` in a subprocess whose TMPDIR and working folder are empty folders. The last test stops it
    (SIGTERM), where it must exit cleanly and leave nothing behind."""
    root = tmp_path_factory.mktemp("serve")
    scratch, cwd = root / "tmp", root / "cwd"
    scratch.mkdir()
    cwd.mkdir()
    env = dict(os.environ, TMPDIR=str(scratch), HANDMESH_MANO_DIR=str(standin_dir))
    options = ["--threads", "2", "--max-video-seconds", str(MAX_VIDEO_SECONDS), "--max-image-mp", "20",
               "--max-upload-mb", str(MAX_UPLOAD_MB)]
    with running_server(options, root / "server.log", cwd=cwd, env=env) as running:
        yield {"url": running.url, "process": running.process, "scratch": scratch, "cwd": cwd, "log": running.log}


@pytest.fixture(scope="module")
def client(server, tmp_path_factory):
    return Client(server["url"], verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


def first_frame(clip) -> np.ndarray:
    capture = cv2.VideoCapture(str(clip.path))
    ok, frame = capture.read()
    capture.release()
    assert ok
    return frame  # BGR


def test_predict_image_returns_an_overlay_meshes_and_keypoints(client, clip, tmp_path):
    frame = first_frame(clip)
    image = tmp_path / "hand.png"
    cv2.imwrite(str(image), frame)
    overlay, glb, downloads, keypoints, summary = client.predict(
        handle_file(str(image)), "tracker", "mesh", 1, api_name="/predict_image")
    shown = cv2.imread(overlay)
    assert shown.shape == frame.shape
    changed = np.abs(shown.astype(int) - frame.astype(int)).max(axis=-1) > 40
    # An untrained mesh at the mean pose covers ~1 % of the frame below the HUD band; without a mesh, nothing changes.
    assert changed[H // 3:].mean() > 0.005, "the mesh should be drawn over the frame (below the HUD band)"
    scene = trimesh.load(glb)
    (mesh,) = scene.geometry.values()
    assert mesh.vertices.shape == (778, 3) and mesh.faces.shape == (1538, 3)
    assert sorted(Path(p).suffix for p in downloads) == [".glb", ".json", ".obj", ".ply"]
    obj = trimesh.load([p for p in downloads if p.endswith(".obj")][0], process=False)
    assert np.allclose(obj.vertices * [1, -1, -1], mesh.vertices, atol=1e-5)  # glTF axes vs camera frame
    record = json.loads(Path(keypoints).read_text())
    (hand,) = record["hands"]
    points = np.array(hand["keypoints_3d"])
    assert points.shape == (21, 3) and (points[:, 2] > 0).all(), "metres in front of the camera"
    assert np.array(hand["keypoints_2d"]).shape == (21, 2)
    assert len(hand["mano"]["hand_pose"]) == 45 and len(hand["mano"]["betas"]) == 10
    assert "1 hand(s)" in summary


def test_bad_uploads_get_a_message_and_the_server_keeps_serving(server, client, clip, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    with pytest.raises(AppError, match="not an image"):
        client.predict(handle_file(str(text)), "tracker", "mesh", 1, api_name="/predict_image")
    huge = tmp_path / "huge.png"
    cv2.imwrite(str(huge), np.zeros((5000, 5000, 3), np.uint8))  # 25 MP, over the server's 20
    with pytest.raises(AppError, match="25 MP: expected at most 20 MP"):
        client.predict(handle_file(str(huge)), "tracker", "mesh", 1, api_name="/predict_image")
    noise = tmp_path / "noise.png"  # incompressible: over the server's upload limit
    cv2.imwrite(str(noise), np.random.default_rng(0).integers(0, 256, (1400, 1400, 3), dtype=np.uint8))
    assert noise.stat().st_size > MAX_UPLOAD_MB * 1e6
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        client.predict(handle_file(str(noise)), "tracker", "mesh", 1, api_name="/predict_image")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(clip.path.read_bytes()[:600])
    with pytest.raises(AppError, match="not a video this server can decode"):
        client.predict(handle_file(str(broken)), "tracker", True, "mesh", 1, api_name="/predict_video")
    long_clip = tmp_path / "long.mp4"
    writer = cv2.VideoWriter(str(long_clip), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (64, 48))
    for index in range(30):
        writer.write(np.full((48, 64, 3), index * 8, np.uint8))
    writer.release()
    with pytest.raises(AppError, match=r"lasts 1\.0 s: expected at most 0\.5 s"):
        client.predict(handle_file(str(long_clip)), "tracker", True, "mesh", 1, api_name="/predict_video")
    refused = {"notes.png", "huge.png", "noise.png", "broken.mp4", "long.mp4"}
    assert not [p for p in server["scratch"].rglob("*") if p.name in refused], "refused uploads are not kept"
    overlay, *_ = client.predict(handle_file(_still(clip, tmp_path)), "tracker", "mesh", 1, api_name="/predict_image")
    assert cv2.imread(overlay) is not None, "still serving after the bad uploads"


def _still(clip, tmp_path) -> str:
    path = tmp_path / "still.png"
    cv2.imwrite(str(path), first_frame(clip))
    return str(path)


def test_video_gives_an_overlay_video_and_per_frame_meshes(client, clip):
    video, archive, summary = client.predict(handle_file(str(clip.path)), "tracker", True, "mesh", 1,
                                             api_name="/predict_video")
    capture = cv2.VideoCapture(video if isinstance(video, str) else video["video"])
    frames = 0
    while capture.read()[0]:
        frames += 1
    assert frames == FRAMES
    with zipfile.ZipFile(archive) as members:
        names = members.namelist()
        record = json.loads(members.read("keypoints.json"))
    assert sum(name.endswith(".obj") for name in names) == FRAMES
    assert [f["frame"] for f in record["frames"]] == list(range(FRAMES))
    assert f"{FRAMES} frames" in summary


@pytest.mark.slow
def test_live_stream_in_chromium_with_a_fake_camera(server, clip, tmp_path):
    """Start the webcam stream in the page, see overlays with the mesh arrive, stop; then a page that goes away
    mid-stream, and one whose camera is refused. Writes the README's screenshot when HANDMESH_SERVE_SCREENSHOT=1."""
    if chromium_path() is None:
        pytest.skip("Debian's chromium is not installed: run `make browser-deps` (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra: pip install -e '.[dev]'")
    camera = tmp_path / "camera.y4m"
    assert write_y4m(clip.path, camera) == (W, H)
    with fake_camera_page(camera, server["url"]) as page:
        start_live(page)
        wait_for_frames(page, 3, timeout_ms=40_000)
        shown = cv2.imdecode(np.frombuffer(live_overlay(page), np.uint8), cv2.IMREAD_COLOR)
        assert shown.shape == (H, W, 3)
        if os.environ.get(SCREENSHOT_ENV):
            wait_for_frames(page, 20, timeout_ms=60_000)  # the HUD's moving averages past the start-up
            page.screenshot(path=str(REPO / "demo" / "assets" / "serve.png"))
        stop_live(page)
        time.sleep(1.0)
        settled = live_status(page)[0]
        time.sleep(1.5)
        assert live_status(page)[0] == settled >= 3, "the stream stopped"
    with fake_camera_page(camera, server["url"]) as page:  # closed while streaming: a client that goes away
        start_live(page)
        wait_for_frames(page, 2, timeout_ms=40_000)
        page.click("button[role='tab']:has-text('Image')")  # the Image tab: upload, run, run again with another view
        page.set_input_files("#image-input input[type='file']", _still(clip, tmp_path))
        for view in ("mesh", "skeleton"):  # the same upload twice
            page.click(f"#image-view label:has-text('{view}') >> nth=0")
            page.click("#image-run")
            page.wait_for_function("(view) => { const text = document.querySelector('#image-summary textarea').value;"
                                   " return text.includes('hand(s) found') && text.includes(`drawn: ${view};`); }",
                                   arg=view, timeout=30_000)
    with fake_camera_page(camera, server["url"], allow=False) as page:  # a user who refuses the camera
        page.click("#live-start", timeout=60_000)
        page.wait_for_function("() => document.querySelector('#live-status').textContent"
                               ".startsWith('no camera (NotAllowedError)')", timeout=20_000)
    # where the mesh is drawn the overlay differs from every clip frame; the HUD band at the top is left out
    capture = cv2.VideoCapture(str(clip.path))
    differences = []
    while (read := capture.read())[0]:
        differences.append((np.abs(shown.astype(int) - read[1].astype(int)).max(axis=-1) > 40)[H // 3:].mean())
    assert min(differences) > 0.01


def post_frame(url: str, body: bytes, **query) -> tuple[int, bytes, str]:
    """POST a frame to the Live tab's route as the page does -> (status, body, decoded status header)."""
    import urllib.error
    import urllib.parse
    import urllib.request

    query = {"session": "test-session-1", "detector": "tracker", "smoothing": "1", "view": "mesh", "max_hands": "1",
             **query}
    request = urllib.request.Request(url.rstrip("/") + FRAME_ROUTE + "?" + urllib.parse.urlencode(query), data=body,
                                     headers={"Content-Type": "image/jpeg"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            status, data, headers = answer.status, answer.read(), answer.headers
    except urllib.error.HTTPError as error:
        status, data, headers = error.code, error.read(), error.headers
    return status, data, urllib.parse.unquote(headers.get(STATUS_HEADER) or "")


def oversized_frame_status(url: str, length: int) -> int:
    """The status for a frame announced as `length` bytes; the body is never sent (the server answers from the
    header, and a client still sending would meet a closed connection)."""
    import http.client
    import urllib.parse

    where = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(where.hostname, where.port, timeout=60)
    try:
        connection.putrequest("POST", FRAME_ROUTE + "?session=test-session-1&detector=tracker")
        connection.putheader("Content-Type", "image/jpeg")
        connection.putheader("Content-Length", str(length))
        connection.endheaders()
        return connection.getresponse().status
    finally:
        connection.close()


def test_live_route_answers_frames_one_behind_and_refuses_bad_ones(server, clip):
    """The Live tab's transport without a browser: JPEG in, the previous frame's overlay out; bad frames, bad
    controls and a bad session id get a message (400) and the server goes on."""
    ok, jpeg = cv2.imencode(".jpg", first_frame(clip))
    status, body, line = post_frame(server["url"], jpeg.tobytes())
    assert status == 204 and line == "starting"
    time.sleep(1.0)
    status, body, line = post_frame(server["url"], jpeg.tobytes())
    assert status == 200 and line.startswith("frame 1: 1 hand(s), mesh drawn")
    assert cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR).shape == (H, W, 3)
    status, body, _ = post_frame(server["url"], b"not an image at all")
    assert status == 400 and b"not an image" in body
    status, body, _ = post_frame(server["url"], jpeg.tobytes(), view="wireframe")
    assert status == 400 and b"expected detector in" in body
    status, body, _ = post_frame(server["url"], jpeg.tobytes(), session="../../etc")
    assert status == 400 and b"session id" in body
    assert oversized_frame_status(server["url"], MAX_UPLOAD_MB * 2**20 + 1) == 413
    assert post_frame(server["url"], jpeg.tobytes())[0] == 200, "still serving"


def test_server_stops_cleanly_and_leaves_nothing_behind(server, client, clip, tmp_path):
    overlay, *_ = client.predict(handle_file(_still(clip, tmp_path)), "tracker", "mesh", 1, api_name="/predict_image")
    assert cv2.imread(overlay) is not None, "still serving after everything above"
    client.close()
    process = server["process"]
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    log = server["log"].read_text()
    assert "Traceback" not in log, log[-3000:]
    assert "removed" in log
    left = [p.name for p in server["scratch"].iterdir() if not p.name.startswith("torchinductor_")]  # torch's cache
    assert left == [], "the temporary folder is removed"
    assert [p.name for p in server["cwd"].iterdir()] == [], "nothing written in the working folder"
