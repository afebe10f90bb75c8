"""A Hugging Face hub cache laid out on disk, as huggingface_hub writes it, for tests that must never download."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from safetensors.torch import save_file

COMMIT = "0123456789abcdef0123456789abcdef01234567"  # any 40-hex commit id


def write_timm_weights(cache: Path, name: str, filename: str = "model.safetensors", seed: int = 0) -> dict:
    """Random weights of timm model `name` (with its classifier) saved where `hf_hub_download` looks for timm's
    ImageNet weights: <cache>/models--org--repo/{refs/main, snapshots/<commit>/<filename>}. Returns the state dict."""
    torch.manual_seed(seed)
    model = timm.create_model(name, num_classes=1000)
    repo = model.pretrained_cfg["hf_hub_id"]  # e.g. timm/fastvit_t8.apple_in1k
    folder = cache / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(COMMIT)
    snapshot = folder / "snapshots" / COMMIT
    snapshot.mkdir(parents=True, exist_ok=True)
    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    if filename.endswith(".safetensors"):
        save_file(state, str(snapshot / filename))
    else:
        torch.save(state, snapshot / filename)
    return state
