"""The ways `handmesh bench --what model` runs one HandModel: each an `Engine` over the same weights.

    train_time              the train-time graph (multi-branch FastViT), eager PyTorch
    reparam_timm            timm's `reparameterize_model` only, eager
    reparam                 timm's + `fold_for_inference` with pre-packed fused oneDNN convs, eager (the shipped form)
    reparam_channels_last   timm's + `fold_for_inference` with plain PyTorch convs, channels-last memory, eager
    compile                 torch.compile (inductor, weight freezing) of the folded plain-PyTorch graph
    onnxruntime             the folded graph exported to ONNX, ONNX Runtime with all graph optimisations
    onnxruntime_int8        the same ONNX graph with int8 weights (ORT dynamic quantisation): accuracy cost reported

Every engine maps (images (B, 3, S, S) float [0, 1], K (B, 3, 3)) -> vertices (B, 778, 3) metres, as a torch tensor.
"""

from __future__ import annotations

import copy
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from timm.utils.model import reparameterize_model

from handmesh.export import export_onnx, inference_copy, onnx_session
from handmesh.models.hand_model import HandModel
from handmesh.models.inference_fold import onednn_available

Run = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (images, K) -> vertices (B, 778, 3)
ENGINE_LABELS = {
    "train_time": "train-time graph, eager",
    "reparam_timm": "timm reparameterize_model, eager",
    "reparam": "reparameterised + folded, oneDNN pre-packed, eager",
    "reparam_channels_last": "reparameterised + folded, channels_last, eager",
    "compile": "torch.compile (inductor, freezing)",
    "onnxruntime": "ONNX Runtime (graph optimisations on)",
    "onnxruntime_int8": "ONNX Runtime, int8 dynamic quantisation",
}


@dataclass
class Engine:
    name: str
    run: Run
    setup_seconds: float = 0.0  # building it: folding, exporting, compiling (compile happens at the first call)
    threads: int = 2


def _eager(model: torch.nn.Module, channels_last: bool = False) -> Run:
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)

    def run(images: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(images, K).vertices

    return run


def _onnx(path: Path, threads: int) -> Run:
    session = onnx_session(path, threads=threads)

    def run(images: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
        (vertices,) = session.run(["vertices"], {"images": images.numpy(), "K": K.numpy()})
        return torch.from_numpy(vertices)

    return run


def _compiled(model: HandModel, example: tuple[torch.Tensor, torch.Tensor]) -> tuple[Run, float]:
    """torch.compile with inductor's freezing (weights become constants: conv weights pre-packed, BN folded)."""
    import torch._inductor.config as inductor_config

    compiled = torch.compile(model, dynamic=False)
    start = time.perf_counter()
    with inductor_config.patch(freezing=True), torch.inference_mode():
        for batch in {1, example[0].shape[0]}:  # compile each batch size used, outside the timed runs
            compiled(example[0][:batch], example[1][:batch])
    seconds = time.perf_counter() - start

    def run(images: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return compiled(images, K).vertices

    return run, seconds


def _quantize_int8(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    frame = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
    where = f" at {Path(frame.filename).name}:{frame.lineno}" if frame else ""
    return f"{type(error).__name__}: {text[0][:300] if text else ''}{where}"


def build_engines(model: HandModel, workdir: Path, example: tuple[torch.Tensor, torch.Tensor], threads: int = 2,
                  names: tuple[str, ...] = tuple(ENGINE_LABELS)) -> tuple[dict[str, Engine], dict[str, str]]:
    """Engines over copies of `model` (a train-time HandModel in eval mode, left untouched) -> (engines, skipped).

    `example` is the largest (images, K) batch that will be timed (compile specialises on it). `skipped` maps an
    engine that could not be built here to the reason, e.g. a compiler error. The ONNX file is kept in `workdir`
    and reused by later calls.
    """
    engines: dict[str, Engine] = {}
    skipped: dict[str, str] = {}
    onnx_path = workdir / "model.onnx"

    def build(name: str) -> Engine:
        start = time.perf_counter()
        if name == "train_time":
            return Engine(name, _eager(copy.deepcopy(model).eval()))
        if name == "reparam_timm":
            timm_only = copy.deepcopy(model).eval()
            reparameterize_model(timm_only.encoder.backbone, inplace=True)
            return Engine(name, _eager(timm_only), time.perf_counter() - start)
        if name == "reparam":
            if not onednn_available():
                raise RuntimeError("this torch build has no oneDNN (mkldnn) CPU kernels")
            return Engine(name, _eager(inference_copy(model, "onednn")), time.perf_counter() - start)
        if name == "reparam_channels_last":
            return Engine(name, _eager(inference_copy(model, "torch"), channels_last=True), time.perf_counter() - start)
        if name == "compile":
            run, seconds = _compiled(inference_copy(model, "torch"), example)
            return Engine(name, run, seconds)
        if name in ("onnxruntime", "onnxruntime_int8"):
            if not onnx_path.is_file():
                export_onnx(inference_copy(model, "torch"), onnx_path)
            path = onnx_path
            if name == "onnxruntime_int8":
                path = workdir / "model_int8.onnx"
                _quantize_int8(onnx_path, path)
            return Engine(name, _onnx(path, threads), time.perf_counter() - start, threads)
        raise ValueError(f"unknown engine {name!r}; expected one of {tuple(ENGINE_LABELS)}")

    for name in names:
        try:
            engines[name] = build(name)
        except Exception as error:  # noqa: BLE001 - an engine that cannot run here is reported, the others go on
            skipped[name] = _one_line(error)
    return engines, skipped
