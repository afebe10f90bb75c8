"""`handmesh bench`: the timing helper against known durations and sizes, the headline numbers from their parts, the
aggregation of parts (missing / failing parts reported, the others still run), the model part end to end, the
data part on a given folder, and the results files (`--out`, `--table`: records and the README's speed table)."""

from __future__ import annotations

import json
import re
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from handmesh.bench import data as data_bench, model as model_bench, record, table
from handmesh.bench.timing import PeakMemory, Timing, matmul_gflops, time_call, time_interleaved
from handmesh.cli import main
from handmesh.commands import bench as bench_command
from handmesh.threads import torch_threads

from conftest import TINY_TRAIN


def test_time_call_measures_a_known_duration():
    calls = []
    timing = time_call(lambda: (calls.append(1), time.sleep(0.01)), runs=5, warmup=2)
    assert len(calls) == 7 and timing.runs == 5 and timing.warmup == 2
    assert 10.0 <= timing.median_ms < 200.0
    assert timing.p10_ms <= timing.median_ms <= timing.p90_ms


def test_time_interleaved_runs_round_robin():
    order = []
    timings = time_interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, runs=3, warmup=1)
    assert order == ["a", "b"] + ["a", "b"] * 3  # warmups, then one call of each per round
    assert set(timings) == {"a", "b"} and all(t.runs == 3 for t in timings.values())
    with pytest.raises(ValueError):
        time_call(lambda: None, runs=0)


def test_timing_as_dict():
    assert Timing(2.0, 1.0, 3.0, 20, 3).as_dict("x") == {"x_ms": 2.0, "x_p10_ms": 1.0, "x_p90_ms": 3.0, "x_runs": 20}
    assert Timing(2.0, 1.0, 3.0, 20, 3, 4.0).as_dict("x")["x_cpu_ms"] == 4.0


def test_cpu_time_counts_work_not_waiting():
    timing = time_call(lambda: time.sleep(0.02), runs=3, warmup=0)
    assert timing.median_ms >= 20.0 and timing.cpu_median_ms < 10.0  # sleeping costs no CPU
    busy = time_call(lambda: sum(range(300_000)), runs=3, warmup=0)
    assert busy.cpu_median_ms > 0.3 * busy.median_ms


def test_peak_memory_sees_a_known_allocation():
    with PeakMemory() as memory:
        block = np.ones(200 * 2**20 // 8)  # 200 MiB, every page touched
        time.sleep(0.05)
        del block
    if memory.extra_mb is None:
        pytest.skip("no /proc here: only the process-wide high-water mark is available")
    assert 150 <= memory.extra_mb <= 400


def test_torch_threads_restores_and_matmul_rate():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
        rate = matmul_gflops(size=256, runs=3)
    assert torch.get_num_threads() == before
    assert 0.1 < rate < 1e5  # GFLOP/s of a float32 matmul on any CPU


def test_summary_known_answer():
    result = {"train_time_ms": 300.0, "reparam_ms": 150.0, "onnxruntime_ms": 100.0, "onnxruntime_int8_ms": 50.0,
              "train_time_max_abs_diff_m": 0.0, "reparam_max_abs_diff_m": 2e-7, "onnxruntime_max_abs_diff_m": 3e-7,
              "onnxruntime_int8_max_abs_diff_m": 5e-4, "gflops": 10.0, "matmul_gflops_start": 90.0,
              "matmul_gflops_end": 100.0}
    summary = model_bench.summarise(result, ["train_time", "reparam", "onnxruntime", "onnxruntime_int8"])
    assert summary["best_engine"] == "onnxruntime_int8" and summary["best_ms"] == 50.0
    assert summary["reparam_speedup"] == 2.0 and summary["best_engine_speedup"] == 6.0
    assert summary["max_abs_diff_m"] == 3e-7  # the int8 row states its own accuracy cost
    assert summary["best_gflops_per_s"] == 200.0 and summary["best_share_of_matmul_peak"] == 2.0
    assert summary["meets_targets"] is True


@pytest.fixture
def fake_parts(monkeypatch):
    """Two stand-in bench parts: one that works, one that raises (only the aggregation is under test here)."""
    works = types.ModuleType("handmesh.bench.works")
    works.run = lambda quick=False: {"quick": quick, "rate_per_s": 12.5}
    broken = types.ModuleType("handmesh.bench.broken")

    def fail(quick=False):
        raise RuntimeError("camera unplugged")

    broken.run = fail
    monkeypatch.setitem(sys.modules, "handmesh.bench.works", works)
    monkeypatch.setitem(sys.modules, "handmesh.bench.broken", broken)
    monkeypatch.setattr(bench_command, "PARTS", ("broken", "missing_part", "works"))


def test_failing_and_missing_parts_do_not_stop_the_others(fake_parts, capsys):
    assert main(["bench", "--what", "all", "--json", "--quick"]) == 1
    captured = capsys.readouterr()
    results = json.loads(captured.out)
    assert results["works"] == {"quick": True, "rate_per_s": 12.5}
    assert "camera unplugged" in results["broken"]["error"]
    assert "does not exist" in results["missing_part"]["error"]
    assert "camera unplugged" in captured.err and "Traceback" not in captured.err


def test_table_output_without_json(fake_parts, capsys):
    assert main(["bench", "--what", "all"]) == 1
    out = capsys.readouterr().out
    assert "== works ==" in out and "rate_per_s" in out and "12.50" in out


@pytest.mark.slow
def test_model_bench_quick(capsys):
    assert main(["bench", "--what", "model", "--json", "--quick"]) == 0
    result = json.loads(capsys.readouterr().out)  # one JSON object, nothing else on stdout
    for key in ("train_time_ms", "reparam_ms", "best_ms", "best_engine", "reparam_speedup", "best_engine_speedup",
                "max_abs_diff_m", "gflops", "matmul_peak_gflops", "encoder_ms", "regressor_ms", "mano_ms",
                "onnxruntime_ms", "reparam_channels_last_ms", "peak_rss_mb"):
        assert key in result, key
    assert result["reparam_speedup"] == pytest.approx(result["train_time_ms"] / result["reparam_ms"], rel=1e-2)
    assert result["best_engine_speedup"] == pytest.approx(result["train_time_ms"] / result["best_ms"], rel=1e-2)
    assert result["max_abs_diff_m"] <= 1e-4 < result["vertex_sensitivity_m"]
    assert result["best_ms"] == min(result[f"{name}_ms"] for name in model_bench.ENGINE_LABELS
                                    if f"{name}_ms" in result and name != "train_time")
    assert "compile_skipped" in result  # --quick leaves out torch.compile, and says so
    assert 0.2 < result["gflops"] < 2  # fastvit_t8 at 128 px: about 0.36 GFLOP (1.4 GFLOP at 256 px per timm)


def test_data_bench_reads_a_given_folder_through_the_workers(tiny_root):
    result = data_bench.run(quick=True, root=tiny_root)
    assert "synth_samples_per_s" not in result  # the given folder is read, nothing is synthesised
    assert (result["loader_images"], result["loader_workers"], result["loader_input_size"]) == (4 * TINY_TRAIN, 2, 224)
    assert result["loader_to_decode_ratio"] == pytest.approx(
        result["loader_images_per_s"] / result["decode_images_per_s"], rel=0.01, abs=2e-3)
    if "loader_cpu_ms_per_image" in result:  # Linux: the workers' CPU time read from /proc
        assert result["loader_to_decode_cpu_ratio"] == pytest.approx(
            2 * result["decode_cpu_ms_per_image"] / result["loader_cpu_ms_per_image"], rel=0.02, abs=2e-3)
        assert 0 < result["decode_cpu_ms_per_image"] < result["loader_cpu_ms_per_image"]  # decode is part of loading
    assert result["cache_json_mb_per_s"] > 0


def _record(measurements: dict, what: str = "model", quick: bool = False, load=(0.5, 0.4, 0.3)) -> record.BenchRecord:
    machine = record.Machine(cpu="Intel(R) Xeon(R) Platinum 8480+ CPU @ 2.00GHz", isa="amx", logical_cpus=8,
                             usable_cpus=2, flags=("avx2", "avx512f", "amx_bf16"), system="Linux x86_64")
    return record.BenchRecord(what=what, date="2026-12-06T10:00:00+00:00", settings={"what": what, "quick": quick},
                              machine=machine, software={"python": "3.11.7", "torch": "2.14.1+cpu",
                                                         "onnxruntime": "1.32.0"},
                              load=record.Load(start=load, end=(2.5, 1.0, 0.5), usable_cpus=2), git_commit=None,
                              measurements=measurements)


def test_record_names_round_trip_and_load():
    known = _record({"rate_per_s": 12.5, "missing": float("nan")}, what="eval", quick=True)
    assert known.machine.slug == "intel-xeon-platinum-8480-amx"
    assert known.file_name == "eval-quick-intel-xeon-platinum-8480-amx-torch2.14.1-cpu.json"
    payload = json.loads(known.to_json())
    assert payload["measurements"] == {"rate_per_s": 12.5, "missing": None} and payload["under_load"] is True
    assert record.record_from_dict(payload) == _record({"rate_per_s": 12.5, "missing": None}, "eval", True)
    assert record.Load(start=(1.9, 1, 1), end=(2.0, 1, 1), usable_cpus=2).under_load is False  # the bench alone
    assert record.Load(start=None, end=None, usable_cpus=2).under_load is None
    with pytest.raises(record.ResultsError, match="format 1"):
        record.record_from_dict({**payload, "machine": {"cpu": "x"}}, "broken.json")


def test_machine_and_software_of_this_process():
    machine, versions = record.machine_info(), record.software_versions()
    assert machine.cpu and 1 <= machine.usable_cpus <= machine.logical_cpus
    assert set(machine.flags) <= set(record.FLAGS) and machine.slug.endswith(machine.isa)
    assert versions["torch"] == torch.__version__.split("+")[0] or versions["torch"] == torch.__version__


def test_out_writes_one_record_per_part_that_ran(fake_parts, tmp_path, capsys):
    assert main(["bench", "--what", "all", "--quick", "--out", str(tmp_path / "results")]) == 1
    (path,) = (tmp_path / "results").iterdir()  # the failing and the missing part write nothing
    written = record.read_records(tmp_path / "results")[0]
    assert path.name == written.file_name and path.name.startswith("works-quick-")
    assert written.measurements == {"quick": True, "rate_per_s": 12.5} and written.settings["quick"] is True
    assert written.software["torch"] and written.machine.usable_cpus >= 1 and written.load.end is not None
    assert str(path) in capsys.readouterr().err
    assert main(["bench", "--what", "works", "--out", str(path)]) == 2  # a file in the way: said before measuring
    error = capsys.readouterr().err
    assert "expected a folder" in error and "Traceback" not in error


MODEL_RESULT = {"encoder": "fastvit_ma36", "input_size": 224, "threads": 2, "throughput_batch": 32,
                "train_time_ms": 300.0, "reparam_timm_ms": 200.0, "reparam_ms": 150.0, "onnxruntime_ms": 120.0,
                "train_time_images_per_s": 4.0, "reparam_timm_images_per_s": 5.0, "reparam_images_per_s": 9.94,
                "onnxruntime_images_per_s": 9.0, "train_time_max_abs_diff_m": 0.0,
                "reparam_timm_max_abs_diff_m": 1.7e-7, "reparam_max_abs_diff_m": 2.44e-7,
                "onnxruntime_max_abs_diff_m": 2.3e-7, "compile_skipped": "no compiler"}


def test_speed_table_known_answer():
    block = table.speed_table_block([_record(MODEL_RESULT), _record({"x": 1}, what="eval")])
    lines = block.splitlines()
    assert lines[0] == table.SPEED_TABLE_START and lines[-1] == table.SPEED_TABLE_END
    prose = " ".join(block.split())
    assert "FastViT-MA36" in prose and "224x224" in prose and "torch 2.14.1+cpu" in prose
    assert "measured under load (1-minute load average 0.5-2.5 on 2 CPUs)" in prose
    assert max(len(line) for line in lines if not line.startswith(("|", "<!--"))) <= 120  # wrapped prose
    assert "| reparameterised + folded (`inference_fold.py`), eager | 150 | 2.00x | **9.9** | 2.4e-7 |" in lines
    assert "| ONNX Runtime | **120** | **2.50x** | 9.0 | 2.3e-7 |" in lines
    assert "| train-time graph, eager | 300 | 1.00x | 4.0 | 0 |" in lines
    assert "| torch.compile (inductor, freezing) | skipped | | | |" in lines
    assert table.readme_block(f"intro\n{block}\nafter") == block and table.readme_block("no markers") is None


def test_table_command_and_its_errors(tmp_path, capsys):
    assert main(["bench", "--table", str(tmp_path / "none")]) == 2
    assert "no folder" in capsys.readouterr().err
    record.write_record(_record({"x": 1}, what="eval"), tmp_path)
    assert main(["bench", "--table", str(tmp_path)]) == 2
    assert "--what model" in capsys.readouterr().err
    record.write_record(_record(MODEL_RESULT, quick=True), tmp_path)
    assert main(["bench", "--table", str(tmp_path)]) == 0  # no full run yet: the quick one, and it says so
    assert "`handmesh bench --what model --quick`" in " ".join(capsys.readouterr().out.split())
    record.write_record(_record({**MODEL_RESULT, "train_time_ms": 600.0}), tmp_path)
    assert main(["bench", "--table", str(tmp_path)]) == 0  # a full run is preferred to a newer quick one
    out = capsys.readouterr().out.strip()
    assert out == table.speed_table_block(record.read_records(tmp_path)) and "--quick" not in out and "4.00x" in out
    (tmp_path / "bad.json").write_text("[1, 2")
    assert main(["bench", "--table", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "bad.json" in error and "Traceback" not in error


def test_git_commit(tmp_path):
    assert record.git_commit(tmp_path) is None  # not a checkout
    repository = Path(record.__file__).resolve().parents[2]
    if not (repository / ".git").exists():
        pytest.skip("the package is not in a git checkout here")
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", record.git_commit())
