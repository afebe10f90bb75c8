"""FastViT encoder: sizes read from timm, normalisation inside forward, weights from a file or the Hugging Face hub
(cache laid out in the test, or a local stand-in server), errors."""

from __future__ import annotations

import hashlib
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from handmesh.cli import main
from handmesh.errors import CheckpointError, HandmeshError
from handmesh.models.encoder import Encoder

from hub_cache import COMMIT, write_timm_weights

REPO = Path(__file__).resolve().parents[1]

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


def test_weights_of_another_encoder_name_the_expected_one(tmp_path):
    path = tmp_path / "fastvit_t12.safetensors"
    save_file(timm.create_model("fastvit_t12", num_classes=0).state_dict(), str(path))
    with pytest.raises(CheckpointError, match=r"does not fit timm's fastvit_t8 backbone: .* with other shapes .*"
                                              r"weights of fastvit_t8; pass the matching --model.encoder"):
        Encoder("fastvit_t8", pretrained=str(path))


@pytest.fixture
def offline_hub(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache with HF_HUB_OFFLINE on: whatever is not laid out in it cannot be had. huggingface_hub
    reads both settings when first imported, so its constants are patched too."""
    import huggingface_hub.constants

    cache = tmp_path / "hf_home" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(cache.parent))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.mark.parametrize("filename", ["model.safetensors", "pytorch_model.bin"])
def test_timm_weights_come_from_the_hub_cache_offline(offline_hub, filename):
    state = write_timm_weights(offline_hub, "fastvit_t8", filename)
    encoder = Encoder("fastvit_t8", pretrained="timm")
    for key, value in encoder.backbone.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)


def test_offline_without_the_cache_is_a_clear_error(offline_hub, tmp_path, capsys):
    with pytest.raises(CheckpointError, match=r"ImageNet weights for fastvit_t8 \(huggingface.co/timm/fastvit_t8"
                                              r"\.apple_in1k\) are not in the local Hugging Face cache .* "
                                              r"HF_HUB_OFFLINE is set"):
        Encoder("fastvit_t8", pretrained="timm")
    write_timm_weights(offline_hub, "fastvit_t12")  # another model's weights do not stand in
    with pytest.raises(CheckpointError, match="not in the local Hugging Face cache"):
        Encoder("fastvit_t8", pretrained="timm")
    code = main(["fit", "--config", "configs/quickstart.yaml", "--model.pretrained", "timm", "--data.root",
                 str(tmp_path), "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.logger", "false"])
    err = capsys.readouterr().err
    assert code == 2 and "not in the local Hugging Face cache" in err and "Traceback" not in err


@pytest.mark.slow  # two fresh interpreters importing torch and timm
def test_hf_home_and_hf_hub_offline_from_the_environment(tmp_path):
    """The settings a user exports: HF_HOME moves the cache, HF_HUB_OFFLINE=1 forbids the network (fresh process)."""
    state = write_timm_weights(tmp_path / "hub", "fastvit_t8", seed=3)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HOME=str(tmp_path), HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    code = ("from handmesh.models.encoder import Encoder; "
            "print(Encoder('fastvit_t8', pretrained='timm').backbone.stem[0].conv_kxk[0].conv.weight.sum().item())")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) == pytest.approx(state["stem.0.conv_kxk.0.conv.weight"].sum().item(), rel=1e-6)
    (tmp_path / "empty").mkdir()
    result = subprocess.run([sys.executable, "-c", code], env=dict(env, HF_HOME=str(tmp_path / "empty")),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "HF_HUB_OFFLINE is set" in result.stderr


class FakeHub(http.server.BaseHTTPRequestHandler):
    """Serves files the way huggingface.co's resolve endpoint does: HEAD gives the commit, ETag and size; GET the
    bytes; a missing file is a 404 with the Hub's EntryNotFound code."""

    files: dict[str, bytes] = {}
    requests: list[str] = []

    def _answer(self, body: bool) -> None:
        self.requests.append(f"{self.command} {self.path}")
        data = self.files.get(self.path.split("?")[0])
        if data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_HEAD(self):  # noqa: N802 - http.server's naming
        self._answer(body=False)

    def do_GET(self):  # noqa: N802
        self._answer(body=True)

    def log_message(self, *args):
        pass


def test_timm_weights_are_downloaded_into_the_cache_when_online(tmp_path, monkeypatch, capfd):
    """Online and not cached: fetched from the Hub repository timm names (here a local stand-in server, never the
    network) into the cache; the next time the cache answers without any request."""
    import huggingface_hub.constants

    source = timm.create_model("fastvit_t8", num_classes=1000)
    weights = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(weights))
    FakeHub.files = {"/timm/fastvit_t8.apple_in1k/resolve/main/model.safetensors": weights.read_bytes()}
    FakeHub.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    cache = tmp_path / "hub"
    endpoint = f"http://127.0.0.1:{server.server_port}"
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    try:
        encoder = Encoder("fastvit_t8", pretrained="timm")
        downloaded = list(FakeHub.requests)
        Encoder("fastvit_t8", pretrained="timm")
    finally:
        server.shutdown()
        thread.join()
    for key, value in encoder.backbone.state_dict().items():
        torch.testing.assert_close(value, source.state_dict()[key], rtol=0, atol=0)
    assert any(request.startswith("GET /timm/fastvit_t8.apple_in1k/") for request in downloaded)
    assert FakeHub.requests == downloaded  # the second encoder read the cache only
    assert list(cache.glob("models--timm--fastvit_t8.apple_in1k/snapshots/*/model.safetensors"))
    assert "downloading timm's ImageNet weights for fastvit_t8" in capfd.readouterr().err  # (+ hf's bar on a terminal)


def test_unknown_encoder_is_a_clear_error():
    with pytest.raises(HandmeshError, match="not a timm FastViT"):
        Encoder("resnet50")
    with pytest.raises(HandmeshError, match="timm has no model 'fastvit_nope'"):
        Encoder("fastvit_nope")
