"""A Hugging Face hub cache laid out on disk, as huggingface_hub writes it, for tests that must never download."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from safetensors.torch import save_file

COMMIT = "0123456789abcdef0123456789abcdef01234567"  # any 40-hex commit id


def write_weights_file(path: Path, name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights of timm model `name` with its ImageNet classifier, as timm publishes them, saved as
    `.safetensors` or (any other suffix) with torch.save. Returns the state dict."""
    torch.manual_seed(seed)
    state = {key: value.contiguous() for key, value in timm.create_model(name, num_classes=1000).state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return state


def write_timm_weights(cache: Path, name: str, filename: str = "model.safetensors", seed: int = 0) -> dict:
    """`write_weights_file` where `hf_hub_download` looks for timm's ImageNet weights of `name`:
    <cache>/models--org--repo/{refs/main, snapshots/<commit>/<filename>}. Returns the state dict."""
    repo = timm.models.get_pretrained_cfg(name).hf_hub_id  # e.g. timm/fastvit_t8.apple_in1k
    folder = cache / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(COMMIT)
    return write_weights_file(folder / "snapshots" / COMMIT / filename, name, seed)
