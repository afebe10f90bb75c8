"""`handmesh bench --what demo` (quick): the keys, and numbers that hang together."""

import pytest

import handmesh.inference  # noqa: F401 - timm before Mesa's LLVM (the reverse order segfaults)
from handmesh.bench.demo import run
from handmesh.demo.detect import mediapipe_available


@pytest.mark.slow
def test_quick_demo_bench_reports_rates_ratio_and_stages(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # the untrained model's ONNX file goes here
    # an untrained model, whatever runs/ holds
    monkeypatch.setattr("handmesh.demo.app.DEFAULT_CHECKPOINT", tmp_path / "none.ckpt")
    result = run(quick=True)
    for key in ("demo_fps", "model_only_fps", "demo_to_model_ratio", "capture_ms", "detect_ms", "infer_ms",
                "render_ms"):
        assert result[key] > 0, key
    assert result["demo_to_model_ratio"] == pytest.approx(result["demo_fps"] / result["model_only_fps"], rel=0.01)
    assert result["model_only_ms"] == pytest.approx(1e3 / result["model_only_fps"], rel=0.01)
    assert result["demo_frames"] == 30 and result["frame_size"] == "640x480"
    assert result["engine"] == "onnxruntime" and result["input_size"] == 128
    if mediapipe_available():  # the default detector finds the generated hand, and runs on some frames only
        assert result["detector"] == "mediapipe" and result["frames_with_a_hand"] == 30
        assert 0 < result["detector_frames"] < 30
    assert not any(key.startswith(("ma36_", "timm_")) for key in result)  # the large models run only in the full bench
