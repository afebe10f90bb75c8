"""`handmesh bench --what demo` (quick): the keys, and numbers that hang together."""

import pytest

import handmesh.inference  # noqa: F401 - timm before Mesa's LLVM (the reverse order segfaults)
from handmesh.bench.demo import run


@pytest.mark.slow
def test_quick_demo_bench_reports_rates_ratio_and_stages():
    result = run(quick=True)
    for key in ("demo_fps", "model_only_fps", "demo_to_model_ratio", "capture_ms", "detect_ms", "infer_ms", "render_ms"):
        assert result[key] > 0, key
    assert result["demo_to_model_ratio"] == pytest.approx(result["demo_fps"] / result["model_only_fps"], rel=0.01)
    assert result["model_only_ms"] == pytest.approx(1e3 / result["model_only_fps"], rel=0.01)
    assert result["demo_frames"] == 30 and result["frame_size"] == "640x480"
    assert not any(key.startswith("ma36_") for key in result)  # the large model runs only in the full bench
