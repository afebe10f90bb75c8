"""FastViT image encoder (timm): a feature map from RGB images, with timm's ImageNet weights (Hugging Face) or a file.

Any timm FastViT works by name (`fastvit_t8` ... `fastvit_ma36`, optionally with a tag like `.apple_dist_in1k`).
Sizes and normalisation are read from the model (`num_features`, `resolve_model_data_config`), never hard-coded.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import timm
import torch
from torch import nn

from handmesh.errors import CheckpointError, HandmeshError
from handmesh.models.depthwise import speed_up_depthwise

PRETRAINED_NONE = None  # random initialisation (tests, the CPU quickstart)
PRETRAINED_TIMM = "timm"  # timm's ImageNet weights: the Hugging Face cache, else downloaded into it (`timm_weights`)


class Encoder(nn.Module):
    """images (B, 3, S, S) RGB, uint8 in [0, 255] (the dataset's batches) or float in [0, 1] -> features
    (B, C, S/32, S/32), C = `num_features`. The one place where images are scaled and normalised.

    pretrained: None (random), "timm" (the ImageNet weights of `name`, see `timm_weights`), or a path to a
    `.safetensors` / `.pth` / `.pt` state dict of the same timm model (classifier keys are ignored; every backbone key
    must match).
    """

    def __init__(self, name: str = "fastvit_ma36", pretrained: str | None = PRETRAINED_NONE,
                 drop_path_rate: float = 0.0):
        super().__init__()
        if not name.startswith("fastvit"):
            raise HandmeshError(f"encoder {name!r} is not a timm FastViT; expected a name like 'fastvit_t8' or "
                                "'fastvit_ma36'")
        try:
            self.backbone = timm.create_model(name, pretrained=False, num_classes=0, global_pool="",
                                              drop_path_rate=drop_path_rate)
        except RuntimeError as error:  # timm: "Unknown model (...)"
            raise HandmeshError(f"timm has no model {name!r} ({error}); expected e.g. 'fastvit_t8' or "
                                "'fastvit_ma36'") from None
        speed_up_depthwise(self.backbone)  # CPU training passes only; the same weights and outputs
        self.name = name
        self.num_features: int = self.backbone.num_features
        data_config = timm.data.resolve_model_data_config(self.backbone)
        self.register_buffer("mean", torch.tensor(data_config["mean"]).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(data_config["std"]).reshape(1, 3, 1, 1), persistent=False)
        if pretrained == PRETRAINED_TIMM:
            self.load_backbone_weights(timm_weights(self.backbone.pretrained_cfg, name))
        elif pretrained:
            self.load_backbone_weights(pretrained)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(self._normalise(images))  # (B, C, S/32, S/32)

    def forward_with_stage(self, images: torch.Tensor, stage: int) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (final features (B, C, S/32, S/32), the output of stage `stage` (0-3) (B, C_stage, S/s, S/s) with
        s = `stage_stride(stage)`), from one pass."""
        final, (intermediate,) = self.backbone.forward_intermediates(self._normalise(images), indices=[stage])
        return final, intermediate

    def stage_channels(self, stage: int) -> int:
        return self.backbone.feature_info[stage]["num_chs"]

    def stage_stride(self, stage: int) -> int:
        return self.backbone.feature_info[stage]["reduction"]

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) uint8 or float in [0, 1] -> float, normalised with the model's mean and std."""
        x = images.float()
        if images.dtype == torch.uint8:
            x = x * (1 / 255)  # uint8 batches cross processes and devices 4x lighter than float32 ones
        # NCHW-contiguous: a channels-last batch crashes FastViT's backward pass on torch 2.14.1 CPU (docs/results.md)
        return ((x - self.mean) / self.std).contiguous()

    def load_backbone_weights(self, path: str | os.PathLike) -> None:
        """Load a timm state dict file into the backbone, strictly on the backbone keys; the classifier is ignored."""
        state = read_state_dict(Path(path))
        classifier = self.backbone.pretrained_cfg.get("classifier") or "head.fc"
        state = {k: v for k, v in state.items() if not k.startswith(classifier + ".")}
        expected = self.backbone.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        wrong_shape = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
        if missing or unexpected or wrong_shape:
            raise CheckpointError(
                f"{path} does not fit timm's {self.name} backbone: {len(missing)} missing keys {missing[:4]}, "
                f"{len(unexpected)} unexpected keys {unexpected[:4]}, {len(wrong_shape)} with other shapes "
                f"{wrong_shape[:4]}. Expected the train-time (not reparameterised) weights of {self.name}; pass the "
                f"matching --model.encoder or another --model.pretrained."
            )
        self.backbone.load_state_dict(state, strict=True)

    def reparameterize(self) -> None:
        """Fold the train-time branches (MobileOne / RepMixer / RepCPE) into single convolutions, in place.

        Outputs are unchanged up to float rounding; use for inference only (the folded model has other keys).
        """
        from timm.utils.model import reparameterize_model

        reparameterize_model(self.backbone, inplace=True)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from `.safetensors` or a torch file (loaded with weights_only: no code runs)."""
    if not path.is_file():
        raise CheckpointError(f"no encoder weights at {path}: expected a .safetensors or .pth file of a timm FastViT.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure to parse means a corrupt or foreign file
        raise CheckpointError(
            f"could not read encoder weights {path} ({type(error).__name__}: {error}); expected a timm state dict "
            "saved as .safetensors or with torch.save."
        ) from None
    for key in ("state_dict", "model"):  # common wrappers around a state dict
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds no state dict of tensors; expected timm FastViT weights.")
    return state


TIMM_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm looks for in a Hugging Face repo, in order


def timm_weights(pretrained_cfg: dict, name: str) -> Path:
    """The local file of timm's ImageNet weights for this model: from the Hugging Face cache when there, else
    downloaded into it (with a progress bar) from the Hub repository timm names (`hf_hub_id`), as
    `timm.create_model(name, pretrained=True)` would. HF_HUB_OFFLINE=1 (read when huggingface_hub is first imported)
    keeps it to the cache; HF_HOME / HF_HUB_CACHE move the cache, as for timm.
    """
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    hub_id = pretrained_cfg.get("hf_hub_id")
    if not hub_id:
        raise CheckpointError(f"timm names no Hugging Face repository for {name}'s ImageNet weights; pass "
                              "--model.pretrained /path/to/weights.safetensors or --model.pretrained null.")
    repo, _, revision = hub_id.partition("@")  # timm's "org/name@revision"
    filenames = (pretrained_cfg["hf_hub_filename"],) if pretrained_cfg.get("hf_hub_filename") else TIMM_WEIGHT_FILES
    for filename in filenames:  # the cache first: no network round trip when the weights are already here
        found = try_to_load_from_cache(repo_id=repo, filename=filename, revision=revision or None)
        if isinstance(found, str):
            return Path(found)
    cache = constants.HF_HUB_CACHE
    if constants.HF_HUB_OFFLINE:
        raise CheckpointError(_not_cached(name, repo, cache, "HF_HUB_OFFLINE is set, so nothing is downloaded"))
    print(f"downloading timm's ImageNet weights for {name} from huggingface.co/{repo} into {cache}", file=sys.stderr)
    problem = f"the repository has none of {', '.join(filenames)}"
    for filename in filenames:
        try:
            return Path(hf_hub_download(repo_id=repo, filename=filename, revision=revision or None))
        except LocalEntryNotFoundError:  # the Hub was not reachable
            problem = "huggingface.co could not be reached"
            break
        except EntryNotFoundError:  # not in the repository: try timm's next name
            continue
        except Exception as error:  # noqa: BLE001 - the Hub refused, the connection broke, the disk is full
            problem = f"the download failed ({type(error).__name__}: {error})"
            break
    raise CheckpointError(_not_cached(name, repo, cache, problem))


def _not_cached(name: str, repo: str, cache: str, why: str) -> str:
    return (
        f"timm's ImageNet weights for {name} (huggingface.co/{repo}) are not in the local Hugging Face cache ({cache}) "
        f"and {why}. Fetch them where huggingface.co is reachable (this command with HF_HUB_OFFLINE unset, or "
        f"`hf download {repo}`; HF_HOME or HF_HUB_CACHE choose the cache) and copy the cache here, or pass "
        "--model.pretrained /path/to/weights.safetensors, or --model.pretrained null to start from random weights."
    )
