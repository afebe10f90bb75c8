"""A trained model one flag away: `handmesh export --format hub` writes a Hugging Face-style folder, and
`--checkpoint` reads it from a folder, from hf://owner/repo through a local Hugging Face cache (offline), or from a URL
(a local http server on 127.0.0.1). Nothing leaves the machine."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from handmesh.checkpoints import FORMAT_VERSION, METADATA_KEY, MODEL_PREFIX, atomic_save
from handmesh.cli import main
from handmesh.errors import CheckpointError
from handmesh.inference import Predictor
from handmesh.mano import ManoLayer
from handmesh.mano_file import resolve_mano_dir
from handmesh.models.hand_model import HandModel, HandModelConfig

torch.set_num_threads(2)
SIZE = 64
REPO = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"  # a snapshot's revision in the local Hugging Face cache
SCORES = {"pa_mpjpe_mm": 12.5, "pa_mpvpe_mm": 12.1, "f_at_5mm": 0.31, "f_at_15mm": 0.87}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """runs/NAME with checkpoints/last.ckpt (a t8 at 64 px, random weights) and the run's scores.json."""
    run = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    model = HandModel(ManoLayer.from_dir(resolve_mano_dir().directory),
                      HandModelConfig(encoder="fastvit_t8", input_size=SIZE))
    atomic_save({
        "state_dict": {MODEL_PREFIX + key: value for key, value in model.state_dict().items()}, "global_step": 7,
        METADATA_KEY: {"format": FORMAT_VERSION, "model_args": model.config.as_dict(),
                       "mano": {"is_standin": bool(model.mano.is_standin), "source": model.mano.source}},
    }, run / "checkpoints" / "last.ckpt")
    (run / "scores.json").write_text(json.dumps(SCORES))
    return run


@pytest.fixture(scope="module")
def hub_dir(run_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hub") / "handmesh-t8"
    assert main(["export", "--checkpoint", str(run_dir / "checkpoints" / "last.ckpt"), "--format", "hub",
                 "--out", str(out)]) == 0
    return out


def crops() -> tuple[np.ndarray, np.ndarray]:
    images = np.random.default_rng(0).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    K = np.tile(np.array([[96, 0, 32], [0, 96, 32], [0, 0, 1]], np.float32), (2, 1, 1))
    return images, K


def test_hub_folder_holds_weights_config_and_a_card_with_the_scores(hub_dir, run_dir):
    assert sorted(p.name for p in hub_dir.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((hub_dir / "config.json").read_text())
    assert config[METADATA_KEY]["model_args"]["encoder"] == "fastvit_t8" and config["global_step"] == 7
    assert config[METADATA_KEY]["mano"]["is_standin"] is True and config[METADATA_KEY]["mano"]["source"]
    card = (hub_dir / "README.md").read_text()
    assert "| PA-MPJPE (mm) | 12.5 |" in card and "stand-in" in card and "hf://" in card
    assert not [p for p in hub_dir.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_a_hub_folder_loads_to_the_same_network(hub_dir, run_dir):
    from_folder = Predictor.from_checkpoint(hub_dir)
    from_ckpt = Predictor.from_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert "step 7" in from_folder.description
    np.testing.assert_array_equal(from_folder.predict(*crops()).vertices, from_ckpt.predict(*crops()).vertices)


def test_hf_names_load_from_the_local_cache_offline(hub_dir, run_dir, tmp_path):
    """A subprocess, as huggingface_hub reads HF_HUB_OFFLINE and HF_HUB_CACHE when it is imported."""
    repo = tmp_path / "hub-cache" / "models--someone--handmesh-t8"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for path in hub_dir.iterdir():
        (snapshot / path.name).write_bytes(path.read_bytes())
    (snapshot / "last.ckpt").write_bytes((run_dir / "checkpoints" / "last.ckpt").read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    script = (
        "from handmesh.inference import Predictor\n"
        "from handmesh.errors import CheckpointError\n"
        "for name in ('hf://someone/handmesh-t8', 'hf://someone/handmesh-t8/last.ckpt', 'hf://someone/missing'):\n"
        "    try:\n"
        "        print('OK', Predictor.from_checkpoint(name).description.split(';')[0])\n"
        "    except CheckpointError as error:\n"
        "        print('ERROR', error)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub-cache"),
           "XDG_CACHE_HOME": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith(("OK", "ERROR"))]
    assert len(lines) == 3, done.stdout + done.stderr
    assert lines[0].startswith("OK fastvit_t8 64px") and "step 7" in lines[0] and "hf://someone/handmesh-t8" in lines[0]
    assert lines[1].startswith("OK fastvit_t8 64px") and "last.ckpt" in lines[1]
    assert lines[2].startswith("ERROR") and "not in the local Hugging Face cache" in lines[2]


@pytest.fixture
def server(run_dir):
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(run_dir / "checkpoints"))
    handler.log_message = lambda *args: None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_a_url_is_downloaded_once_into_the_cache(server, run_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    url = f"http://127.0.0.1:{server.server_address[1]}/last.ckpt"
    first = Predictor.from_checkpoint(url)
    (downloaded,) = (tmp_path / "handmesh" / "downloads").glob("*/last.ckpt")
    assert downloaded.read_bytes() == (run_dir / "checkpoints" / "last.ckpt").read_bytes()
    server.shutdown()  # the second load needs no server
    again = Predictor.from_checkpoint(url)
    np.testing.assert_array_equal(first.predict(*crops()).vertices, again.predict(*crops()).vertices)


def test_bad_urls_are_clear_errors(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(CheckpointError, match="could not download .*404"):
        Predictor.from_checkpoint(f"http://127.0.0.1:{server.server_address[1]}/missing.ckpt")
    with pytest.raises(CheckpointError, match="expected an https:// URL"):
        Predictor.from_checkpoint("http://example.com/model.ckpt")
    assert not list((tmp_path / "handmesh" / "downloads").glob("*/*"))  # no partial file left
    assert main(["export", "--checkpoint", "hf://just-a-name", "--format", "hub", "--out", str(tmp_path / "h")]) == 2
    assert "expected hf://owner/repo" in capsys.readouterr().err
