"""The ONNX Runtime engine behind `Predictor(engine="onnxruntime" | "auto")`: exported once, cached, checked.

The network is exported with `handmesh.export.export_model` (which checks it against the train-time graph before
writing, atomically) into a file named by a fingerprint of everything the graph holds: every parameter and buffer
(the weights and the hand model's arrays), the torch version and the opset. A changed checkpoint or hand model gives
another name, so the file is rebuilt; older files of the same stem in that folder are removed. A file from an earlier
run is checked again when opened: vertices and keypoints within PARITY_TOLERANCE_M of the PyTorch network.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from handmesh.errors import HandmeshError
from handmesh.export import ONNX_OPSET, PARITY_TOLERANCE_M, export_model, measure_parity, onnx_runner, onnx_session
from handmesh.models.hand_model import HandModel
from handmesh.paths import user_cache_dir

FINGERPRINT_CHARS = 16  # hex characters of the fingerprint in the file name




def fingerprint(model: torch.nn.Module) -> str:
    """blake2b over every parameter and buffer (name, dtype, shape, bytes), the torch version and the ONNX opset."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"torch {torch.__version__} opset {ONNX_OPSET}".encode())
    tensors = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:300] if text else ''}"


@dataclass
class OnnxEngine:
    """An ONNX Runtime CPU session over the exported network; `run` maps numpy batches like the PyTorch graph."""

    session: object
    path: Path
    threads: int
    max_abs_diff_m: float  # parity with the PyTorch network on this process's check

    def run(self, images: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """images (B, 3, S, S) float32 in [0, 1], K (B, 3, 3) px -> vertices (B, 778, 3) m, keypoints (B, 21, 3) m,
        camera (B, 3)."""
        return onnx_runner(self.session)(images, K)

    @classmethod
    def build(cls, model: HandModel, cache_dir: Path | None, stem: str, threads: int,
              tolerance: float = PARITY_TOLERANCE_M) -> "OnnxEngine":
        """The cached ONNX file for `model` (exported into `cache_dir` first when missing), opened and checked.

        Raises HandmeshError (with the reason) when ONNX Runtime is missing, the export fails or the outputs drift.
        """
        folder = cache_dir if cache_dir is not None and _writable(cache_dir) else user_cache_dir() / "onnx"
        path = folder / f"{stem}.{fingerprint(model)[:FINGERPRINT_CHARS]}.onnx"
        parity = None
        if not path.is_file():
            if not _writable(folder):
                raise HandmeshError(f"no writable folder for the ONNX file ({folder})")
            try:
                parity = export_model(model, path, tolerance=tolerance).parity  # checked before it was written
            except HandmeshError:
                raise
            except Exception as error:  # noqa: BLE001 - an exporter failure becomes the reason to fall back
                raise HandmeshError(f"the ONNX export failed ({_one_line(error)})") from None
            for stale in folder.glob(f"{stem}.*.onnx"):  # the same model's files for older weights
                if stale != path and len(stale.name) == len(path.name):
                    stale.unlink(missing_ok=True)
        try:
            session = onnx_session(path, threads=threads, spin=False)
        except HandmeshError:
            raise
        except Exception as error:  # noqa: BLE001 - a damaged cache file: say so (it is rebuilt when removed)
            raise HandmeshError(f"ONNX Runtime could not open {path} ({_one_line(error)}); "
                                "delete it to rebuild") from None
        if parity is None:  # a file from an earlier run: check it again
            parity = measure_parity(model, onnx_runner(session), model.input_size)
        if not parity.ok(tolerance):
            raise HandmeshError(f"{path} differs from PyTorch by {parity.max_abs_diff_m:.2e} m (allowed "
                                f"{tolerance:.0e} m); delete it to rebuild")
        return cls(session, path, threads, parity.max_abs_diff_m)
