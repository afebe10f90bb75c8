"""FastViT encoder: sizes read from timm, normalisation inside forward, weights from a file or timm's cache, errors."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

from handmesh.errors import CheckpointError, HandmeshError
from handmesh.models.encoder import Encoder

torch.set_num_threads(2)


def test_feature_map_size_and_normalisation():
    encoder = Encoder("fastvit_t8").eval()
    reference = timm.create_model("fastvit_t8", num_classes=0, global_pool="")
    assert encoder.num_features == reference.num_features == 768
    config = timm.data.resolve_model_data_config(reference)
    assert encoder.mean.flatten().tolist() == pytest.approx(list(config["mean"]))
    assert encoder.std.flatten().tolist() == pytest.approx(list(config["std"]))
    images = torch.rand(2, 3, 64, 64)
    features = encoder(images)
    assert features.shape == (2, 768, 2, 2)
    normalised = (images - torch.tensor(config["mean"]).view(1, 3, 1, 1)) / torch.tensor(config["std"]).view(1, 3, 1, 1)
    torch.testing.assert_close(features, encoder.backbone.forward_features(normalised))


def test_uint8_images_are_scaled_like_the_float_ones():
    """The dataset's uint8 batches and float [0, 1] images of the same pixels give the same features."""
    encoder = Encoder("fastvit_t8").eval()
    pixels = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(encoder(pixels), encoder(pixels.float() / 255), rtol=0, atol=1e-5)
        assert not torch.allclose(encoder(pixels), encoder(pixels.float()), atol=1e-2)  # unscaled would differ


def test_channels_last_input_reaches_the_backbone_contiguous():
    """Channels-last batches crash FastViT's backward pass on torch 2.14.1 CPU (docs/results.md)."""
    encoder = Encoder("fastvit_t8")
    seen = []
    encoder.backbone.stem.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].is_contiguous()))
    images = torch.rand(2, 64, 64, 3).permute(0, 3, 1, 2)  # what a HWC numpy batch becomes
    assert not images.is_contiguous()
    encoder(images).mean().backward()
    assert seen == [True]


def test_weights_from_a_file_load_strictly(tmp_path):
    source = timm.create_model("fastvit_t8", num_classes=1000)
    path = tmp_path / "fastvit_t8.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))  # includes head.fc.*
    encoder = Encoder("fastvit_t8", pretrained=str(path))
    for key, value in encoder.backbone.state_dict().items():
        torch.testing.assert_close(value, source.state_dict()[key], rtol=0, atol=0)
    torch.save(source.state_dict(), tmp_path / "fastvit_t8.pth")
    Encoder("fastvit_t8", pretrained=str(tmp_path / "fastvit_t8.pth"))


def test_weights_of_another_model_are_refused(tmp_path):
    path = tmp_path / "t12.safetensors"
    save_file(timm.create_model("fastvit_t8", num_classes=0).state_dict() | {"extra.weight": torch.zeros(1)}, str(path))
    with pytest.raises(CheckpointError, match="unexpected keys.*extra.weight"):
        Encoder("fastvit_t8", pretrained=str(path))
    (tmp_path / "bad.pth").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="could not read encoder weights"):
        Encoder("fastvit_t8", pretrained=str(tmp_path / "bad.pth"))
    with pytest.raises(CheckpointError, match="no encoder weights"):
        Encoder("fastvit_t8", pretrained=str(tmp_path / "missing.safetensors"))


def test_timm_weights_come_from_the_local_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(CheckpointError, match="not in the local Hugging Face cache"):
        Encoder("fastvit_t8", pretrained="timm")
    # the cache layout huggingface_hub writes: models--org--name/{refs/main, snapshots/<commit>/file}
    repo = tmp_path / "models--timm--fastvit_t8.apple_in1k"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    source = timm.create_model("fastvit_t8", num_classes=1000)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(repo / "snapshots" / commit / "model.safetensors"))
    encoder = Encoder("fastvit_t8", pretrained="timm")
    torch.testing.assert_close(encoder.backbone.stem[0].conv_kxk[0].conv.weight, source.stem[0].conv_kxk[0].conv.weight)


def test_unknown_encoder_is_a_clear_error():
    with pytest.raises(HandmeshError, match="not a timm FastViT"):
        Encoder("resnet50")
    with pytest.raises(HandmeshError, match="timm has no model 'fastvit_nope'"):
        Encoder("fastvit_nope")
