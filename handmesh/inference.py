"""Predictor: a trained checkpoint (or an untrained network) -> hand meshes for image crops. No Lightning at run time.

Used by the demo, `handmesh export`, `handmesh bench` and `handmesh predict`. Checkpoints are read with
`torch.load(weights_only=True)`; the network is rebuilt from the `HandModelConfig` stored in them and its
encoder reparameterised (train-time branches folded) for speed.

Engines: "torch" runs the network in eager PyTorch; "onnxruntime" runs it exported by `handmesh.export` (built once,
cached, see `handmesh.engine`); "auto" is ONNX Runtime on the CPU when it builds and matches PyTorch, else torch.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from handmesh.checkpoints import is_remote, metadata, model_state_dict, read_checkpoint, resolve_checkpoint
from handmesh.cli_values import ENGINES
from handmesh.errors import CheckpointError, HandmeshError
from handmesh.geometry import project_points
from handmesh.hub import is_hub_model, read_hub_model
from handmesh.mano import ManoLayer
from handmesh.mano_file import resolve_mano_dir
from handmesh.models.hand_model import HandModel, HandModelConfig

UNTRAINED_SEED = 0  # untrained networks are reproducible


def _warn(message: str) -> None:
    print(message, file=sys.stderr)


@dataclass
class HandPrediction:
    vertices: np.ndarray  # (B, 778, 3) metres, camera frame (the crop's K; same frame as the full image's camera)
    keypoints_3d: np.ndarray  # (B, 21, 3) metres, camera frame, FreiHAND order
    keypoints_2d: np.ndarray  # (B, 21, 2) pixels in the crop
    camera: np.ndarray  # (B, 3) weak perspective (s, tx, ty)


class Predictor:
    """Runs a HandModel in eval mode on crops. Build it with `from_checkpoint` or `untrained`."""

    def __init__(self, model: HandModel, description: str, is_trained: bool, device: str | torch.device = "cpu",
                 reparameterize: bool = True, engine: str = "torch", cache_dir: Path | None = None,
                 cache_stem: str = "model", threads: int | None = None, notify: Callable[[str], None] = _warn):
        """model: the train-time network (reparameterised here unless `reparameterize` is False). engine: one of
        ENGINES (other than "torch" needs `reparameterize`). cache_dir / cache_stem: where the ONNX file is kept
        (None: the user cache). threads: the engine's CPU threads (None: torch's current count)."""
        if engine not in ENGINES:
            raise HandmeshError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.engine = "torch"
        self.engine_note = "torch"  # how the engine was chosen (the ONNX file, or why not ONNX Runtime)
        self._onnx = None
        if engine != "torch" and reparameterize:
            self._start_onnx(engine, cache_dir, cache_stem, threads or torch.get_num_threads(), notify)
        if reparameterize:
            self.model.reparameterize()
        self.input_size: int = model.input_size
        self.faces: np.ndarray = model.mano.faces.cpu().numpy()  # (1538, 3)
        self.is_standin: bool = bool(model.mano.is_standin)
        self.is_trained = is_trained
        self.description = description

    def _start_onnx(self, engine: str, cache_dir: Path | None, cache_stem: str, threads: int,
                    notify: Callable[[str], None]) -> None:
        from handmesh.engine import OnnxEngine

        if self.device.type != "cpu" and engine == "auto":
            self.engine_note = f"torch on {self.device} (ONNX Runtime runs here on the CPU only)"
            return
        try:
            if self.device.type != "cpu":
                raise HandmeshError(f"the ONNX engine runs on the CPU, not on {self.device}")
            self._onnx = OnnxEngine.build(self.model, cache_dir, cache_stem, threads)
        except HandmeshError as error:
            if engine == "onnxruntime":
                raise
            self.engine_note = f"torch, because ONNX Runtime is not usable: {error}"
            notify(f"warning: engine: {self.engine_note}")
            return
        self.engine = "onnxruntime"
        self.engine_note = f"onnxruntime ({self._onnx.threads} threads, {self._onnx.path})"

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, mano_dir: str | os.PathLike | None = None,
                        device: str | torch.device = "cpu", reparameterize: bool = True, engine: str = "torch",
                        threads: int | None = None, cache_dir: Path | None = None) -> "Predictor":
        """Load a `handmesh fit` checkpoint; mano_dir as in `resolve_mano_dir` (None: env, data/mano, stand-in).

        path: a .ckpt, a hub folder (`handmesh export --format hub`) or its model.safetensors, an https:// URL or
        hf://owner/repo[/file] (`resolve_checkpoint`). engine as in ENGINES (not "torch" needs reparameterize); the
        ONNX file is cached in `cache_dir` (None: beside a local checkpoint when that folder is writable, else the
        user cache)."""
        local = resolve_checkpoint(path)
        if is_hub_model(local):
            state, entry, config = read_hub_model(local)
            step = config.get("global_step")
        else:
            checkpoint = read_checkpoint(local)
            entry = metadata(checkpoint, local)
            state, step = model_state_dict(checkpoint), checkpoint.get("global_step")
        source = resolve_mano_dir(mano_dir)
        try:
            config = HandModelConfig.from_dict(entry["model_args"])
        except HandmeshError as error:
            raise CheckpointError(f"{path} describes a network this handmesh cannot build: {error}") from None
        model = HandModel(ManoLayer.from_dir(source.directory), config)
        problems = weight_problems(model, state)
        if problems:
            raise CheckpointError(f"{path} does not fit the network it describes ({config}): {len(problems)} "
                                  f"problems, e.g. {problems[:3]}. The file may be damaged or edited.")
        model.load_state_dict(state, strict=True)
        trained_on = entry.get("mano", {})
        note = ""
        if "is_standin" in trained_on and bool(trained_on["is_standin"]) != source.is_standin:
            kind = lambda standin: "the stand-in" if standin else "MANO"  # noqa: E731
            note = (f"; WARNING: trained with {kind(trained_on['is_standin'])} but running with "
                    f"{kind(source.is_standin)}: meshes will be wrong")
        description = (f"{config.encoder} {config.input_size}px {config.head} head, trained "
                       f"(step {step if step is not None else '?'}) from {path}; {source.describe()}{note}")
        folder = local.resolve() if local.is_dir() else local.resolve().parent
        if cache_dir is None and not is_remote(path) and os.access(folder, os.W_OK):
            cache_dir = folder
        stem = local.name if local.is_dir() else local.stem
        return cls(model, description, is_trained=True, device=device, reparameterize=reparameterize, engine=engine,
                   cache_dir=cache_dir, cache_stem=stem, threads=threads)

    @classmethod
    def untrained(cls, encoder: str = "fastvit_t8", input_size: int = 128, mano_dir: str | os.PathLike | None = None,
                  device: str | torch.device = "cpu", engine: str = "torch", threads: int | None = None) -> "Predictor":
        """Random weights (seeded), reparameterised: outputs a hand near the mean pose. For demos and speed tests, so
        a small, fast network by default; the other settings are HandModelConfig's."""
        source = resolve_mano_dir(mano_dir)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(UNTRAINED_SEED)
            model = HandModel(ManoLayer.from_dir(source.directory),
                              HandModelConfig(encoder=encoder, input_size=input_size))
        description = (f"UNTRAINED {encoder} {input_size}px (random weights: the mesh does not follow the hand); "
                       f"{source.describe()}")
        return cls(model, description, is_trained=False, device=device, engine=engine,
                   cache_stem=f"untrained-{encoder}-{input_size}", threads=threads)

    @torch.inference_mode()
    def predict_images(self, images: torch.Tensor, K: torch.Tensor) -> HandPrediction:
        """images (B, 3, S, S) RGB, uint8 (as the dataset gives) or float in [0, 1]; K (B, 3, 3) crop intrinsics
        (pixels). The encoder scales and normalises."""
        if self._onnx is not None:
            return self._predict_onnx(images, K)
        output = self.model(images.to(self.device).contiguous(), K.to(self.device, torch.float32))
        as_numpy = lambda tensor: tensor.float().cpu().numpy()  # noqa: E731
        return HandPrediction(vertices=as_numpy(output.vertices), keypoints_3d=as_numpy(output.keypoints_3d),
                              keypoints_2d=as_numpy(output.keypoints_2d), camera=as_numpy(output.camera))

    def _predict_onnx(self, images: torch.Tensor, K: torch.Tensor) -> HandPrediction:
        if images.dtype == torch.uint8:
            images = images.float() * (1 / 255)  # as the encoder scales uint8 batches
        K = K.float()
        vertices, keypoints_3d, camera = self._onnx.run(images.contiguous().numpy(), K.contiguous().numpy())
        keypoints_2d = project_points(torch.from_numpy(keypoints_3d), K).numpy()  # (B, 21, 2), as the network does
        return HandPrediction(vertices=vertices, keypoints_3d=keypoints_3d, keypoints_2d=keypoints_2d, camera=camera)

    def predict(self, crops: np.ndarray, K: np.ndarray) -> HandPrediction:
        """crops (B, S, S, 3) uint8 RGB with S = input_size, K (B, 3, 3) crop intrinsics (pixels)."""
        crops = np.asarray(crops)
        size = self.input_size
        if crops.ndim != 4 or crops.shape[1:] != (size, size, 3) or crops.dtype != np.uint8:
            raise ValueError(f"crops: expected (B, {size}, {size}, 3) uint8 RGB, got {crops.shape} {crops.dtype}")
        K = np.asarray(K, dtype=np.float32)
        if K.shape != (crops.shape[0], 3, 3):
            raise ValueError(f"K: expected ({crops.shape[0]}, 3, 3) crop intrinsics, got {K.shape}")
        images = torch.from_numpy(crops).permute(0, 3, 1, 2)  # (B, 3, S, S) uint8, made contiguous later
        return self.predict_images(images, torch.from_numpy(K))


def weight_problems(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Missing, unexpected and wrongly shaped entries of `state` for `model` (empty when it fits exactly)."""
    expected = model.state_dict()
    problems = [f"missing {key}" for key in sorted(set(expected) - set(state))]
    problems += [f"unexpected {key}" for key in sorted(set(state) - set(expected))]
    problems += [f"{key}: {tuple(state[key].shape)} instead of {tuple(expected[key].shape)}"
                 for key in sorted(set(state) & set(expected)) if state[key].shape != expected[key].shape]
    return problems
