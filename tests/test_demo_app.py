"""The demo end to end, headless, on a generated clip; and its answers to bad input."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import trimesh

import handmesh.inference  # noqa: F401 - loads timm (and triton's LLVM) before Mesa's: the reverse order segfaults
from handmesh.demo.app import main
from handmesh.demo.detect import mediapipe_available
from handmesh.demo.synthetic import write_synthetic_clip
from handmesh.render import render_mesh_opencv

torch.set_num_threads(2)
W, H, FRAMES = 320, 240, 6
GLOVE = (0.2, 0.35, 0.9)  # the clip's hand is blue, so the skin-coloured overlay always changes pixels
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def engine_cache(tmp_path_factory):
    """The default engine (auto: ONNX Runtime) builds its file for the untrained model here, not in ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def mano_dir(standin_dir) -> Path:
    """The session's stand-in hand model (conftest.py)."""
    return standin_dir


@pytest.fixture(scope="module")
def clip(tmp_path_factory, mano_dir):
    return write_synthetic_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", mano_dir, frames=FRAMES, width=W,
                                height=H, colour=GLOVE)


def read_video(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))


def headless(source, mano_dir, *extra) -> int:
    return main(["--source", str(source), "--no-window", "--detector", "tracker", "--mano-dir", str(mano_dir),
                 "--no-hud", *extra])


def check_summary_line(err: str, frames: int) -> None:
    """The run's last line: a rate no faster than its slowest stage allows (none for a single frame)."""
    (line,) = [line for line in err.splitlines() if re.match(rf"{frames} frames? in ", line)]
    stage_ms = {stage: float(ms) for stage, ms in re.findall(r"(capture|detect|infer|render) (\d+\.\d)", line)}
    assert {"capture", "infer", "render"} <= set(stage_ms), line
    rate = re.search(r"(\d+\.\d) frames/s", line)
    if frames == 1:
        assert rate is None and "FPS" not in line, line
    else:
        assert rate is not None and 0 < float(rate.group(1)) <= 1000 / max(stage_ms.values()) * 1.01, line


def test_headless_run_writes_every_frame_overlays_the_meshes_and_saves_them(tmp_path, clip, mano_dir, capsys):
    out, meshes = tmp_path / "out.mp4", tmp_path / "meshes"
    assert headless(clip.path, mano_dir, "--out", str(out), "--save-meshes", str(meshes)) == 0
    check_summary_line(capsys.readouterr().err, FRAMES)
    inputs, outputs = read_video(clip.path), read_video(out)
    assert len(outputs) == len(inputs) == FRAMES
    assert outputs[0].shape == (H, W, 3)
    assert not list(tmp_path.glob(".*partial*"))  # the partial file was renamed
    record = json.loads((meshes / "keypoints.json").read_text())
    assert [f["frame"] for f in record["frames"]] == list(range(FRAMES))
    K = np.array(record["intrinsics"])
    for index, (frame, shown) in enumerate(zip(inputs, outputs)):
        (hand,) = record["frames"][index]["hands"]
        mesh = trimesh.load(meshes / hand["mesh"], process=False)
        assert mesh.vertices.shape == (778, 3) and mesh.faces.shape == (1538, 3)
        # where the saved mesh projects, the overlay changed the picture; far from it, nothing changed
        drawn = render_mesh_opencv(np.zeros((H, W, 3), np.uint8), mesh.vertices, mesh.faces, K, alpha=1.0)
        mask = drawn.any(axis=-1)
        assert mask.sum() > 50, "the predicted mesh should be visible in the frame"
        difference = np.abs(shown.astype(int) - frame.astype(int)).max(axis=-1)
        assert (difference[mask] > 30).mean() > 0.5
        far = cv2.dilate(mask.astype(np.uint8), np.ones((15, 15), np.uint8)) == 0
        assert np.percentile(difference[far], 99) < 12  # video codec noise only
        keypoints = np.array(hand["keypoints_3d"])
        uv = keypoints @ K.T
        np.testing.assert_allclose(uv[:, :2] / uv[:, 2:], hand["keypoints_2d"], atol=0.5)


def test_left_hand_and_extras_run(tmp_path, clip, mano_dir):
    """The flipped left-hand path, skeleton, side panel, .ply meshes and the OpenCV renderer, on a few frames."""
    out, meshes = tmp_path / "left.mp4", tmp_path / "meshes"
    code = headless(clip.path, mano_dir, "--hand", "left", "--skeleton", "--side-view", "--renderer", "opencv",
                    "--max-frames", "2", "--out", str(out), "--save-meshes", str(meshes), "--mesh-format", "ply")
    assert code == 0
    outputs = read_video(out)
    assert len(outputs) == 2 and outputs[0].shape == (H, W + H // 2, 3)
    record = json.loads((meshes / "keypoints.json").read_text())
    assert [h["side"] for f in record["frames"] for h in f["hands"]] == ["left", "left"]
    assert len(list(meshes.glob("*.ply"))) == 2


def test_one_image_gives_a_png_overlay_and_no_rate(tmp_path, clip, mano_dir, capsys):
    image = tmp_path / "hand.jpg"
    frame = read_video(clip.path)[0]
    cv2.imwrite(str(image), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    out = tmp_path / "overlay.png"
    assert main(["--source", str(image), "--no-window", "--detector", "tracker", "--mano-dir", str(mano_dir),
                 "--out", str(out)]) == 0  # with the HUD
    err = capsys.readouterr().err
    check_summary_line(err, 1)
    assert f"wrote {out}" in err
    shown = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
    assert shown.shape == (H, W, 3)
    assert (np.abs(shown.astype(int) - frame.astype(int)).max(axis=-1) > 30).mean() > 0.01  # the mesh and HUD drawn
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hand.jpg", "overlay.png"]  # no video, no temporary file
    assert headless(image, mano_dir, "--out", str(tmp_path / "overlay.mp4")) == 2
    assert "ending in .png" in capsys.readouterr().err


def test_existing_outputs_are_replaced_only_with_overwrite(tmp_path, clip, mano_dir, capsys):
    out, stats = tmp_path / "out.mp4", tmp_path / "stats.json"
    for path in (out, stats):
        path.write_bytes(b"earlier work")
        options = ("--out", str(out)) if path == out else ("--out", str(tmp_path / "new.mp4"), "--stats-json",
                                                           str(stats))
        assert headless(clip.path, mano_dir, "--max-frames", "2", *options) == 2
        assert "refusing to replace" in capsys.readouterr().err and path.read_bytes() == b"earlier work"
    (tmp_path / "meshes").mkdir()
    (tmp_path / "meshes" / "keypoints.json").write_text("{}")
    assert headless(clip.path, mano_dir, "--save-meshes", str(tmp_path / "meshes")) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert headless(clip.path, mano_dir, "--max-frames", "2", "--out", str(out), "--stats-json", str(stats),
                    "--overwrite") == 0
    assert len(read_video(out)) == 2 and json.loads(stats.read_text())["frames"] == 2


def test_image_folder_with_a_corrupt_image_skips_it(tmp_path, clip, mano_dir, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), cv2.cvtColor(read_video(clip.path)[0], cv2.COLOR_RGB2BGR))
    (folder / "b.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    assert headless(folder, mano_dir, "--save-meshes", str(tmp_path / "meshes")) == 0
    assert "skipping" in capsys.readouterr().err
    assert len(json.loads((tmp_path / "meshes" / "keypoints.json").read_text())["frames"]) == 1


def test_truncated_video_stops_where_decoding_stops_and_keeps_those_frames(tmp_path, clip, mano_dir, capsys):
    whole = tmp_path / "whole.avi"  # AVI: its frames decode one by one until the cut (an mp4's index is at its end)
    writer = cv2.VideoWriter(str(whole), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (W, H))
    for frame in read_video(clip.path):
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 6 // 10])
    decodable = len(read_video(cut))
    assert 0 < decodable < FRAMES
    out = tmp_path / "out.mp4"
    assert headless(cut, mano_dir, "--out", str(out)) == 0
    assert f"decoding stopped at frame {decodable} of {FRAMES}" in capsys.readouterr().err
    assert len(read_video(out)) == decodable


def bad_source(tmp_path: Path, kind: str) -> str:
    if kind == "junk":
        (tmp_path / "junk.mp4").write_bytes(os.urandom(2000))
    if kind == "empty":
        (tmp_path / "empty").mkdir()
    return {"missing": str(tmp_path / "missing.mp4"), "junk": str(tmp_path / "junk.mp4"),
            "empty": str(tmp_path / "empty"), "camera": "7"}[kind]


@pytest.mark.parametrize("kind, message", [
    ("missing", "no such file or folder"), ("junk", "could not decode"), ("empty", "no images"),
    ("camera", "no webcam at index 7"),
])
def test_bad_sources_say_what_is_wrong_and_write_nothing(tmp_path, mano_dir, capsys, kind, message):
    out = tmp_path / "out.mp4"
    assert headless(bad_source(tmp_path, kind), mano_dir, "--out", str(out)) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".*partial*"))


def test_corrupt_checkpoint_is_a_clean_error(tmp_path, clip, mano_dir, capsys):
    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(b"PK\x03\x04 this is no checkpoint" + os.urandom(500))
    out = tmp_path / "out.mp4"
    assert headless(clip.path, mano_dir, "--checkpoint", str(checkpoint), "--out", str(out)) == 2
    assert str(checkpoint) in capsys.readouterr().err
    assert not out.exists()


def test_no_display_suggests_headless(monkeypatch, clip, mano_dir, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["--source", str(clip.path), "--mano-dir", str(mano_dir)]) == 2
    assert "--no-window --out" in capsys.readouterr().err


@pytest.mark.parametrize("options, message", [
    (["--no-window"], "expected --out"),
    (["--no-window", "--out", "x.mp4", "--max-hands", "0"], "--max-hands 0"),
    (["--no-window", "--out", "x.mp4", "--alpha", "1.5"], "between 0 and 1"),
    (["--no-window", "--out", "x.avi.txt"], "expected a name ending in"),
    (["--no-window", "--out", "x.png"], "is for a --source that is one image"),
    (["--no-window", "--out", "x.mp4", "--intrinsics", "600,600,320"], "fx,fy,cx,cy"),
])
def test_bad_options_are_clean_errors(tmp_path, monkeypatch, clip, mano_dir, capsys, options, message):
    monkeypatch.chdir(tmp_path)
    assert main(["--source", str(clip.path), "--mano-dir", str(mano_dir), *options]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing written


def test_without_gl_the_opencv_fallback_draws_with_a_one_line_message(tmp_path, clip, mano_dir):
    out = tmp_path / "out.mp4"
    env = dict(os.environ, PYOPENGL_PLATFORM="unavailable-platform")
    result = subprocess.run(
        [sys.executable, str(REPO / "demo" / "webcam.py"), "--source", str(clip.path), "--no-window", "--no-hud",
         "--detector", "tracker", "--mano-dir", str(mano_dir), "--max-frames", "2", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "OpenCV fallback" in line]
    assert len(lines) == 1 and "unavailable-platform" in lines[0]
    assert len(read_video(out)) == 2


@pytest.mark.slow
def test_interrupted_run_leaves_a_finalised_video(tmp_path, mano_dir):
    frames = 150
    source = write_synthetic_clip(tmp_path / "long.mp4", mano_dir, frames=frames, width=160, height=120, colour=GLOVE)
    out = tmp_path / "out.mp4"
    process = subprocess.Popen(
        [sys.executable, str(REPO / "demo" / "webcam.py"), "--source", str(source.path), "--no-window", "--out",
         str(out), "--detector", "tracker", "--mano-dir", str(mano_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    progress = []  # stderr characters, read as they come: the progress bar shows how many frames are done
    reader = threading.Thread(target=lambda: progress.extend(iter(lambda: process.stderr.read(1), "")), daemon=True)
    reader.start()

    def done() -> int:
        counts = re.findall(rf"(\d+)/{frames}", "".join(progress))
        return int(counts[-1]) if counts else 0

    deadline = time.monotonic() + 240
    while done() < 5 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    reader.join(timeout=10)
    assert process.returncode == 130, "".join(progress)
    assert not list(tmp_path.glob(".out.partial*"))
    assert 5 <= len(read_video(out)) < frames


@pytest.mark.skipif(not mediapipe_available(), reason="mediapipe has no wheel for this Python or platform")
def test_no_hand_in_view_gives_the_raw_frames(tmp_path, mano_dir):
    from handmesh.demo.outputs import VideoRecorder

    rng = np.random.default_rng(0)
    plain = tmp_path / "plain.mp4"
    recorder = VideoRecorder(plain, 30.0, (W, H))
    for _ in range(3):
        recorder.write(np.full((H, W, 3), rng.integers(60, 200, 3), np.uint8))
    recorder.close()
    out = tmp_path / "out.mp4"
    code = main(["--source", str(plain), "--no-window", "--no-hud", "--detector", "mediapipe", "--mano-dir",
                 str(mano_dir), "--out", str(out)])
    assert code == 0
    for frame, shown in zip(read_video(plain), read_video(out), strict=True):
        assert np.abs(frame.astype(int) - shown.astype(int)).max() < 12
