"""`handmesh bench --what model`: latency, throughput, memory and FLOPs of the whole network, per engine, in one run.

One process, one set of weights, the same inputs for every engine; 2 threads (torch intra-op and ORT intra-op). Each
engine is warmed up, then timed round-robin with the others (`timing.time_interleaved`) so a busy spell on a shared
machine slows all alike: compare the ratios, which is what the `*_speedup` keys are.

The network is untrained but not degenerate: seeded random weights with BatchNorm statistics, affine parameters and
layer scales drawn at random, so every fold the inference graph makes changes its weights measurably, and a fold
that was wrong would show in `max_abs_diff_m`. `vertex_sensitivity_m` (how far the vertices move between two random
images) shows the scale against which the 1e-4 m parity bound can be read.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from handmesh.bench.engines import ENGINE_LABELS, build_engines
from handmesh.bench.record import load_average, machine_info, software_versions
from handmesh.bench.timing import PeakMemory, matmul_gflops, max_rss_mb, time_interleaved
from handmesh.export import PARITY_TOLERANCE_M, inference_copy, random_inputs
from handmesh.mano import ManoLayer
from handmesh.mano_file import resolve_mano_dir
from handmesh.models.hand_model import HandModel, HandModelConfig
from handmesh.progress import progress_bar
from handmesh.threads import torch_threads

SEED = 0
THREADS = 2
TARGET_REPARAM_SPEEDUP = 1.5  # reparameterised eager vs the train-time graph, batch 1
TARGET_BEST_SPEEDUP = 2.0  # fastest engine vs the train-time graph, batch 1


@dataclass(frozen=True)
class ModelBenchConfig:
    encoder: str
    input_size: int
    throughput_batch: int
    runs: int
    warmup: int
    throughput_runs: int
    engines: tuple[str, ...] = tuple(ENGINE_LABELS)


# Batch-1 latency (the headline numbers) takes the median of 20 runs; throughput the median of 5, as each run already
# averages 32 images and a batch-32 round of every engine is long (docs/results.md, "The model, per engine").
FULL = ModelBenchConfig("fastvit_ma36", 224, throughput_batch=32, runs=20, warmup=3, throughput_runs=5)
QUICK = ModelBenchConfig("fastvit_t8", 128, throughput_batch=4, runs=5, warmup=1, throughput_runs=3,
                         engines=tuple(name for name in ENGINE_LABELS if name != "compile"))


@torch.no_grad()
def stress_initialise(model: torch.nn.Module, seed: int = SEED) -> torch.nn.Module:
    """Draw BatchNorm statistics / affine parameters and layer scales at random (seeded), in place; returns model."""
    generator = torch.Generator().manual_seed(seed)

    def uniform(tensor: torch.Tensor, low: float, high: float) -> None:
        tensor.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)

    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            uniform(module.running_mean, -0.5, 0.5)
            uniform(module.running_var, 0.5, 2.0)
            uniform(module.weight, 0.5, 1.5)
            uniform(module.bias, -0.2, 0.2)
        gamma = getattr(module, "gamma", None)
        if isinstance(gamma, torch.nn.Parameter):  # timm LayerScale2d
            uniform(gamma, 0.5, 1.0)
    return model


def build_model(config: ModelBenchConfig, mano_dir: str | os.PathLike | None = None) -> tuple[HandModel, str]:
    """The seeded, stress-initialised train-time HandModel in eval mode, and the hand model's description."""
    source = resolve_mano_dir(mano_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = HandModel(ManoLayer.from_dir(source.directory),
                          HandModelConfig(encoder=config.encoder, input_size=config.input_size))
    return stress_initialise(model).eval(), source.describe()


def count_gflops(model: torch.nn.Module, images: torch.Tensor, K: torch.Tensor) -> float:
    """Floating-point operations of one forward pass, GFLOP (torch.utils.flop_counter: matmuls and convolutions)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(images, K)
    return counter.get_total_flops() / 1e9


def stage_times(model: HandModel, images: torch.Tensor, K: torch.Tensor, runs: int, warmup: int) -> dict[str, float]:
    """Median ms of the encoder, the regressor and the MANO layer alone, on the given (folded) model."""
    with torch.inference_mode():
        features = model.encoder(images)
        params = model.regressor(features)
        pose, betas = model.pose_rotations(params.pose), params.betas
        timings = time_interleaved({
            "encoder": lambda: model.encoder(images),
            "regressor": lambda: model.regressor(features),
            "mano": lambda: model.mano(pose, betas),
        }, runs=runs, warmup=warmup)
    return {f"{stage}_ms": round(timing.median_ms, 3) for stage, timing in timings.items()}


def machine() -> dict[str, str | int]:
    """The machine and software keys the readable table names (the full description: `record.machine_info`)."""
    info, versions = machine_info(), software_versions()
    return {"cpu": info.cpu, "cpu_count": info.usable_cpus, "torch": versions["torch"],
            "onnxruntime": versions["onnxruntime"], "python": versions["python"]}


def _one_minute_load() -> float | None:
    averages = load_average()
    return averages[0] if averages else None


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def run(quick: bool = False, mano_dir: str | os.PathLike | None = None) -> dict:
    """Benchmark the whole model; a flat JSON-able dict (see the README's performance table for the keys)."""
    config = QUICK if quick else FULL
    result: dict = {"encoder": config.encoder, "input_size": config.input_size, "threads": THREADS,
                    "runs": config.runs, "warmup": config.warmup, "throughput_batch": config.throughput_batch,
                    "throughput_runs": config.throughput_runs, **machine()}
    with torch_threads(THREADS), tempfile.TemporaryDirectory(prefix="handmesh-bench-") as workdir:
        result["load_average_start"] = _one_minute_load()
        result["matmul_gflops_start"] = round(matmul_gflops(), 1)
        model, mano_description = build_model(config, mano_dir)
        result["mano"] = mano_description
        images, K = random_inputs(config.throughput_batch, config.input_size, seed=1)
        one = (images[:1], K[:1])
        engines, skipped = {}, {}
        for name in progress_bar(config.engines, desc="bench model: build engines", unit="engine"):
            with PeakMemory() as memory:  # the engine's own weights, caches, arenas, compiler, one batch
                built, failed = build_engines(model, Path(workdir), (images, K), THREADS, names=(name,))
                for engine in built.values():
                    engine.run(images, K)
            engines.update(built)
            skipped.update(failed)
            if built and memory.extra_mb is not None:
                result[f"{name}_build_extra_mb"] = round(memory.extra_mb, 1)
        for name in set(ENGINE_LABELS) - set(config.engines):
            skipped[name] = "not run with --quick (compiling takes minutes)"
        for name, reason in skipped.items():
            result[f"{name}_skipped"] = reason
        for name, engine in engines.items():
            if engine.setup_seconds:
                result[f"{name}_setup_s"] = round(engine.setup_seconds, 1)

        reference = engines["train_time"].run(*one)
        other = engines["train_time"].run(images[1:2], K[1:2])
        result["vertex_sensitivity_m"] = _max_diff(reference, other)
        reference_batch = engines["train_time"].run(images, K)
        for name, engine in engines.items():
            result[f"{name}_max_abs_diff_m"] = max(_max_diff(engine.run(*one), reference),
                                                   _max_diff(engine.run(images, K), reference_batch))

        with progress_bar(total=config.runs, desc="bench model: batch 1", unit="round") as bar:
            latency = time_interleaved({name: (lambda e=engine: e.run(*one)) for name, engine in engines.items()},
                                       runs=config.runs, warmup=config.warmup, progress=bar.update)
        for name, timing in latency.items():
            result.update(timing.as_dict(name))

        with progress_bar(total=config.throughput_runs, desc=f"bench model: batch {config.throughput_batch}",
                          unit="round") as bar:
            batch_timing = time_interleaved({name: (lambda e=engine: e.run(images, K))
                                             for name, engine in engines.items()},
                                            runs=config.throughput_runs, warmup=1, progress=bar.update)
        for name, timing in batch_timing.items():
            result[f"{name}_batch_ms"] = round(timing.median_ms, 3)
            result[f"{name}_images_per_s"] = round(config.throughput_batch / (timing.median_ms * 1e-3), 2)

        for name, engine in engines.items():
            with PeakMemory() as memory:
                engine.run(images, K)
            if memory.extra_mb is not None:  # the working set of one batch, steady state
                result[f"{name}_run_extra_mb"] = round(memory.extra_mb, 1)

        folded_torch = inference_copy(model, "torch")
        result["gflops"] = round(count_gflops(folded_torch, *one), 3)
        result["train_time_gflops"] = round(count_gflops(model, *one), 3)
        best_eager = inference_copy(model, "onednn") if "reparam" in engines else folded_torch
        result.update(stage_times(best_eager, *one, runs=config.runs, warmup=config.warmup))
        result["matmul_gflops_end"] = round(matmul_gflops(), 1)
        result["peak_rss_mb"] = round(max_rss_mb(), 1)
        result["load_average_end"] = _one_minute_load()
    result.update(summarise(result, list(engines)))
    return result


def summarise(result: dict, engines: list[str]) -> dict:
    """The headline keys: train_time_ms, reparam_ms, best_ms/engine, speedups, max_abs_diff_m, achieved share."""
    timed = {name: result[f"{name}_ms"] for name in engines if f"{name}_ms" in result}
    best_engine = min((name for name in timed if name != "train_time"), key=timed.get, default="train_time")
    train = timed["train_time"]
    reparam = timed.get("reparam", timed.get("reparam_timm"))
    exact = [name for name in engines if not name.endswith("_int8")]  # the int8 row states its own accuracy cost
    matmul_peak = max(result["matmul_gflops_start"], result["matmul_gflops_end"])
    best_gflops_per_s = result["gflops"] / (timed[best_engine] * 1e-3)
    summary = {
        "train_time_ms": train,
        "reparam_ms": reparam,
        "best_ms": timed[best_engine],
        "best_engine": best_engine,
        "reparam_speedup": round(train / reparam, 3),
        "best_engine_speedup": round(train / timed[best_engine], 3),
        "max_abs_diff_m": max(result[f"{name}_max_abs_diff_m"] for name in exact),
        "best_gflops_per_s": round(best_gflops_per_s, 1),
        "matmul_peak_gflops": matmul_peak,
        "best_share_of_matmul_peak": round(best_gflops_per_s / matmul_peak, 3),
    }
    reparam_name = "reparam" if "reparam_ms" in result else "reparam_timm"
    if "train_time_cpu_ms" in result and f"{reparam_name}_cpu_ms" in result:  # CPU-time ratios: steadier when shared
        summary["reparam_cpu_speedup"] = round(result["train_time_cpu_ms"] / result[f"{reparam_name}_cpu_ms"], 3)
        summary["best_engine_cpu_speedup"] = round(result["train_time_cpu_ms"] / result[f"{best_engine}_cpu_ms"], 3)
    summary["meets_targets"] = bool(summary["reparam_speedup"] >= TARGET_REPARAM_SPEEDUP
                                    and summary["best_engine_speedup"] >= TARGET_BEST_SPEEDUP
                                    and summary["max_abs_diff_m"] <= PARITY_TOLERANCE_M)
    return summary


def format_table(result: dict) -> str:
    """The readable report: one row per engine (batch 1 latency, batch-N throughput, parity, memory), then totals."""
    batch = result["throughput_batch"]
    loads = [load for load in (result.get("load_average_start"), result.get("load_average_end")) if load is not None]
    busy = "; more runnable processes than cores: timings inflated, compare ratios" if loads and max(loads) > result[
        "cpu_count"] else ""
    lines = [f"{result['encoder']} at {result['input_size']}x{result['input_size']}, whole model (encoder + "
             f"regressor + MANO), {result['threads']} threads, {result['cpu']} ({result['cpu_count']} cores), "
             f"torch {result['torch']}, onnxruntime {result['onnxruntime']}; median of {result['runs']} interleaved "
             f"runs; 1-minute load average "
             f"{result.get('load_average_start')} -> {result.get('load_average_end')}{busy}",
             f"{'engine':<54} {'batch 1 ms':>10} {'speedup':>8} {'CPU ms':>8} {f'img/s @{batch}':>11} "
             f"{'max |dv| m':>11} {'run MiB':>8}"]
    train = result["train_time_ms"]
    for name, label in ENGINE_LABELS.items():
        if f"{name}_ms" not in result:
            reason = result.get(f"{name}_skipped", "not run")
            lines.append(f"{label:<54} skipped: {reason}")
            continue
        ms = result[f"{name}_ms"]
        cpu_ms = result.get(f"{name}_cpu_ms", float("nan"))
        lines.append(f"{label:<54} {ms:>10.1f} {train / ms:>7.2f}x {cpu_ms:>8.0f} "
                     f"{result[f'{name}_images_per_s']:>11.2f} {result[f'{name}_max_abs_diff_m']:>11.1e} "
                     f"{result.get(f'{name}_run_extra_mb', float('nan')):>8.0f}")
    lines += [
        f"stages (reparameterised eager, batch 1): encoder {result['encoder_ms']:.1f} ms, regressor "
        f"{result['regressor_ms']:.2f} ms, MANO {result['mano_ms']:.2f} ms",
        f"compute: {result['gflops']:.2f} GFLOP per image (train-time graph {result['train_time_gflops']:.2f}); "
        f"fastest engine {result['best_engine']} reaches {result['best_gflops_per_s']:.0f} GFLOP/s = "
        f"{100 * result['best_share_of_matmul_peak']:.0f}% of this machine's float32 matmul rate "
        f"({result['matmul_peak_gflops']:.0f} GFLOP/s, 2048x2048, same run)",
        f"reparameterised {result['reparam_speedup']:.2f}x (target {TARGET_REPARAM_SPEEDUP}x), fastest engine "
        f"{result['best_engine_speedup']:.2f}x (target {TARGET_BEST_SPEEDUP}x), every fp32 engine within "
        f"{result['max_abs_diff_m']:.1e} m (target {PARITY_TOLERANCE_M:.0e} m; vertices move "
        f"{result['vertex_sensitivity_m']:.3f} m between two random images); peak RSS {result['peak_rss_mb']:.0f} MiB",
    ]
    return "\n".join(lines)
