"""Export the whole HandModel (encoder + regressor + MANO) to ONNX or Core ML, checked against PyTorch.

The exported graph is the reparameterised, inference-folded network (`handmesh.models.inference_fold`, plain PyTorch
ops): images (B, 3, S, S) float in [0, 1] RGB and K (B, 3, 3) crop intrinsics in; vertices (B, 778, 3) and keypoints
(B, 21, 3) in metres, camera frame, and the weak-perspective camera (B, 3) out, with a dynamic batch. Files are
written to a temporary name, checked, and only then moved into place.

Parity is the largest difference of vertices and keypoints (metres) between the exported model and the train-time
PyTorch graph on a random batch of another size than the one traced, so the dynamic batch is checked as well.
Core ML models can be converted on Linux but run only on macOS: elsewhere their parity is reported as unchecked.

Both formats carry `model_metadata` (ONNX metadata_props, Core ML user-defined metadata): the hand model whose arrays
the graph holds (MANO or the stand-in), the encoder and the input size, so a file made with the stand-in says so.
"""

from __future__ import annotations

import copy
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from handmesh.atomic import atomic_path
from handmesh.errors import HandmeshError
from handmesh.models.hand_model import HandModel
from handmesh.models.inference_fold import fold_for_inference

FORMATS = ("onnx", "coreml")
ONNX_OPSET = 17  # the legacy exporter (dynamo=False) at opset 17: exports FastViT cleanly (docs/results.md)
PARITY_TOLERANCE_M = 1e-4  # largest allowed vertex / keypoint difference from PyTorch, metres
TRACE_BATCH = 2  # batch used to trace the graph
PARITY_BATCH = 3  # batch used to check it (differs from TRACE_BATCH: exercises the dynamic batch axis)
COREML_MAX_BATCH = 64
INPUT_NAMES = ("images", "K")
OUTPUT_NAMES = ("vertices", "keypoints", "camera")

METADATA_PREFIX = "handmesh_"  # metadata keys: handmesh_hand_model, handmesh_encoder, ...

# run(images (B, 3, S, S), K (B, 3, 3)) -> (vertices (B, 778, 3), keypoints (B, 21, 3), camera (B, 3)), numpy
Runner = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


class ExportGraph(nn.Module):
    """HandModel with tensor outputs in a fixed order: (vertices (B,778,3) m, keypoints (B,21,3) m, camera (B,3))."""

    def __init__(self, model: HandModel):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        output = self.model(images, K)
        return output.vertices, output.keypoints_3d, output.camera


@dataclass(frozen=True)
class Parity:
    """Differences between an exported model and the train-time PyTorch graph on one random batch."""

    max_abs_diff_m: float | None  # vertices and keypoints, metres; None when the format cannot run here
    camera_max_abs_diff: float | None
    batch: int
    note: str = ""

    def ok(self, tolerance: float = PARITY_TOLERANCE_M) -> bool:
        return self.max_abs_diff_m is None or self.max_abs_diff_m <= tolerance

    def describe(self) -> str:
        if self.max_abs_diff_m is None:
            return f"parity not checked: {self.note}"
        return (f"parity with PyTorch (batch {self.batch}): max |vertex/keypoint difference| "
                f"{self.max_abs_diff_m:.2e} m, camera {self.camera_max_abs_diff:.2e}")


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str
    parity: Parity
    size_mb: float
    seconds: float


def inference_copy(model: HandModel, backend: str = "torch") -> HandModel:
    """A reparameterised, inference-folded copy of a train-time HandModel (eval mode); `model` is left untouched."""
    folded = copy.deepcopy(model).eval()
    folded.reparameterize()
    return fold_for_inference(folded, backend=backend)


def random_inputs(batch: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """images (B, 3, S, S) uniform in [0, 1] and K (B, 3, 3): focal 1.5 S px, principal point jittered near the
    centre."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, size, size, generator=generator)
    K = torch.zeros(batch, 3, 3)
    K[:, 0, 0] = K[:, 1, 1] = 1.5 * size
    K[:, :2, 2] = size / 2 + (torch.rand(batch, 2, generator=generator) - 0.5) * 0.1 * size
    K[:, 2, 2] = 1.0
    return images, K


def torch_runner(model: nn.Module) -> Runner:
    """A Runner over a PyTorch HandModel (evaluated under inference mode)."""
    graph = ExportGraph(model).eval()

    def run(images: np.ndarray, K: np.ndarray):
        with torch.inference_mode():
            outputs = graph(torch.from_numpy(images), torch.from_numpy(K))
        return tuple(output.numpy() for output in outputs)

    return run


def measure_parity(reference: nn.Module, run: Runner, input_size: int, batch: int = PARITY_BATCH,
                   seed: int = 0) -> Parity:
    """Largest vertex / keypoint difference (m) and camera difference between `run` and `reference` on a random
    batch."""
    images, K = random_inputs(batch, input_size, seed)
    expected = torch_runner(reference)(images.numpy(), K.numpy())
    found = run(images.numpy(), K.numpy())
    for name, want, got in zip(OUTPUT_NAMES, expected, found):
        if np.shape(got) != want.shape:
            raise HandmeshError(f"the exported model returned {name} of shape {np.shape(got)}, expected {want.shape}; "
                                "the export is broken: please report it.")
    metres = max(float(np.abs(got - want).max()) for want, got in zip(expected[:2], found[:2]))
    return Parity(metres, float(np.abs(found[2] - expected[2]).max()), batch)


def _require(module: str, purpose: str, extra: str):
    try:
        return __import__(module)
    except ImportError as error:
        raise HandmeshError(f"{purpose} needs the Python package '{module}', which is not installed here ({error}). "
                            f"Install it with: pip install '{extra}'") from None


def onnx_session(path: str | os.PathLike, threads: int = 2, optimize: bool = True, spin: bool = True):
    """An ONNX Runtime CPU session with `threads` intra-op threads and all graph optimisations (or none).

    spin False: idle worker threads sleep instead of spinning, leaving the cores to other stages (the demo)."""
    ort = _require("onnxruntime", "running an ONNX model", "onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def onnx_runner(session) -> Runner:
    def run(images: np.ndarray, K: np.ndarray):
        return tuple(session.run(list(OUTPUT_NAMES), {"images": images, "K": K}))

    return run


def model_metadata(model: HandModel) -> dict[str, str]:
    """What an exported file says about itself: the hand model baked into the graph (MANO or the stand-in, and
    where it came from), the encoder, the input size and the whole HandModelConfig as JSON."""
    mano = model.mano
    values = {
        "hand_model": "stand-in (not MANO: meshes are illustrative only)" if mano.is_standin else "MANO",
        "hand_model_source": mano.source,
        "encoder": model.config.encoder,
        "input_size": str(model.config.input_size),
        "config": json.dumps(model.config.as_dict()),
    }
    return {METADATA_PREFIX + key: value for key, value in values.items()}


def export_onnx(model: HandModel, path: str | os.PathLike, opset: int = ONNX_OPSET) -> None:
    """Write `model` (already folded with the "torch" backend) to `path` as ONNX with a dynamic batch axis and
    `model_metadata` in its metadata_props."""
    onnx = _require("onnx", "ONNX export", "onnx==1.22.0")
    images, K = random_inputs(TRACE_BATCH, model.input_size)
    batch_axis = {0: "batch"}
    with torch.no_grad(), warnings.catch_warnings():
        # shape checks traced as constants: intended
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")  # a harmless exporter note
        torch.onnx.export(
            ExportGraph(model).eval(), (images, K), str(path), dynamo=False, opset_version=opset,
            input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
            dynamic_axes={name: batch_axis for name in INPUT_NAMES + OUTPUT_NAMES},
        )
    graph = onnx.load(str(path))
    onnx.helper.set_model_props(graph, model_metadata(model))
    onnx.save(graph, str(path))


def export_coreml(model: HandModel, path: str | os.PathLike) -> None:
    """Convert `model` (folded with the "torch" backend) to a Core ML ML Program (`.mlpackage`, float32) at `path`."""
    ct = _require("coremltools", "Core ML export", "coremltools")
    images, K = random_inputs(TRACE_BATCH, model.input_size)
    with torch.no_grad(), warnings.catch_warnings():
        # shape checks traced as constants: intended
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        traced = torch.jit.trace(ExportGraph(model).eval(), (images, K))
    batch = ct.RangeDim(lower_bound=1, upper_bound=COREML_MAX_BATCH, default=1)
    size = model.input_size
    mlmodel = ct.convert(
        traced, convert_to="mlprogram", compute_precision=ct.precision.FLOAT32,
        inputs=[ct.TensorType(name="images", shape=(batch, 3, size, size)),
                ct.TensorType(name="K", shape=(batch, 3, 3))],
        outputs=[ct.TensorType(name=name) for name in OUTPUT_NAMES],
    )
    for key, value in model_metadata(model).items():
        mlmodel.user_defined_metadata[key] = value
    mlmodel.save(str(path))


def coreml_parity(reference: nn.Module, path: Path, input_size: int) -> Parity:
    """Core ML parity where Core ML can run (macOS); elsewhere an unchecked Parity that says why."""
    import coremltools as ct

    try:
        mlmodel = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY)
        probe = random_inputs(1, input_size)
        mlmodel.predict({"images": probe[0].numpy(), "K": probe[1].numpy()})
    except Exception as error:  # noqa: BLE001 - on Linux: "Model prediction is only supported on macOS ..."
        return Parity(None, None, PARITY_BATCH, f"Core ML cannot run predictions here ({type(error).__name__}: "
                      f"{str(error).splitlines()[0] if str(error) else ''}); Core ML runs models only on macOS / iOS.")

    def run(images: np.ndarray, K: np.ndarray):
        out = mlmodel.predict({"images": images, "K": K})
        return tuple(np.asarray(out[name]) for name in OUTPUT_NAMES)

    return measure_parity(reference, run, input_size)


def check_format(fmt: str) -> None:
    """HandmeshError unless `fmt` is an export format this module writes."""
    if fmt not in FORMATS:
        raise HandmeshError(f"unknown export format {fmt!r}; expected one of: {', '.join(FORMATS)}")


def _size_mb(path: Path) -> float:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20
    return path.stat().st_size / 2**20


def export_model(model: HandModel, out: str | os.PathLike, fmt: str = "onnx",
                 tolerance: float = PARITY_TOLERANCE_M, on_stage: Callable[[str], None] | None = None) -> ExportResult:
    """Export a train-time HandModel (not modified) to `out` in format `fmt`, check parity, move into place.

    Raises HandmeshError when the format is unknown, its package is missing, or the parity exceeds `tolerance` (m)
    (nothing is written then). `on_stage(name)` is called as each stage starts (for a progress display).
    """
    check_format(fmt)
    _require(*{"onnx": ("onnxruntime", "checking an ONNX export", "onnxruntime"),
               "coreml": ("coremltools", "Core ML export", "coremltools")}[fmt])
    out = Path(out)
    if out.parent and not out.parent.is_dir():
        raise HandmeshError(f"cannot write {out}: the folder {out.parent} does not exist. "
                            "Create it or pass another --out.")
    stage = on_stage or (lambda name: None)
    start = time.perf_counter()
    reference = copy.deepcopy(model).eval()
    stage("fold")
    folded = inference_copy(model, backend="torch")
    with atomic_path(out) as temporary:  # a file, or a folder for an .mlpackage
        stage("export")
        if fmt == "onnx":
            export_onnx(folded, temporary)
            stage("parity")
            parity = measure_parity(reference, onnx_runner(onnx_session(temporary)), model.input_size)
        else:
            export_coreml(folded, temporary)
            stage("parity")
            parity = coreml_parity(reference, temporary, model.input_size)
        if not parity.ok(tolerance):
            raise HandmeshError(f"the exported model differs from PyTorch by {parity.max_abs_diff_m:.2e} m, more than "
                                f"the allowed {tolerance:.0e} m; nothing was written to {out}. Please report this.")
        size_mb = _size_mb(temporary)
    return ExportResult(out, fmt, parity, size_mb, time.perf_counter() - start)
