"""Every file in configs/ trains through `handmesh fit` on the CPU as written: its precision, network, losses,
callbacks and loggers. Only what a test machine must change is overridden: the data (the tiny synthetic set), the MANO
folder, batch size and workers, the run length (STEPS optimizer steps, one validation batch at the end, no sanity
check), and the ImageNet weights: `pretrained: timm` is read from a Hugging Face cache laid out in the test
(HF_HUB_OFFLINE, random weights), a weights file is replaced by a local one of random weights. The test runs in its
own folder, so the configs' relative run folders (default_root_dir, where the loggers write) are written there. A new
config is covered by being in configs/.
"""

from __future__ import annotations

import csv
import inspect
import math
from pathlib import Path

import pytest
import torch
import yaml

from handmesh.checkpoints import read_checkpoint
from handmesh.cli import main
from handmesh.lit_module import HandMeshModule

from hub_cache import write_timm_weights, write_weights_file
from tiny_synth import tiny_synthetic_set

torch.set_num_threads(2)
REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
STEPS = 2
DEFAULT_ENCODER = inspect.signature(HandMeshModule).parameters["encoder"].default


@pytest.fixture(scope="module")
def root(pytestconfig, tmp_path_factory):
    return tiny_synthetic_set(pytestconfig, tmp_path_factory)


def _local_weights(model: dict, folder: Path, monkeypatch) -> tuple[list[str], dict | None]:
    """Stand in for the config's ImageNet weights without the network -> (extra arguments, the weights' state dict)."""
    import huggingface_hub.constants

    pretrained, encoder = model.get("pretrained"), model.get("encoder", DEFAULT_ENCODER)
    if pretrained == "timm":  # the real path: timm's Hugging Face repository, from the cache
        cache = folder / "hf_home" / "hub"
        state = write_timm_weights(cache, encoder, seed=7)
        monkeypatch.setenv("HF_HOME", str(cache.parent))
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))  # read at import: patched too
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        return [], state
    if pretrained:  # a weights file: one of the same name and format, here
        path = folder / "weights" / Path(pretrained).name
        return ["--model.pretrained", str(path)], write_weights_file(path, encoder, seed=7)
    return [], None


def _is_subset(written, saved) -> bool:
    """Whether every value the config wrote is in the configuration LightningCLI ran (which adds the defaults)."""
    if isinstance(written, dict):
        return isinstance(saved, dict) and all(key in saved and _is_subset(value, saved[key])
                                               for key, value in written.items())
    if isinstance(written, list):
        return isinstance(saved, list) and len(written) == len(saved) and all(map(_is_subset, written, saved))
    return written == saved or (isinstance(written, float) and saved == pytest.approx(written))


def _repo_runs() -> set[Path]:
    return set((REPO / "runs").rglob("*")) if (REPO / "runs").is_dir() else set()


@pytest.mark.slow  # 37 s for quickstart.yaml, many minutes for the bf16 MA36 recipe where bf16 is emulated (AVX2 CPUs)
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: path.stem)
def test_config_trains_as_written(config, root, standin_dir, tmp_path, monkeypatch):
    written = yaml.safe_load(config.read_text())
    extra, weights = _local_weights(written["model"], tmp_path, monkeypatch)
    overridden = {"data": {"root", "batch_size", "num_workers"}, "model": {"pretrained", "mano_dir"},
                  "trainer": {"max_steps", "val_check_interval", "check_val_every_n_epoch", "limit_val_batches",
                              "num_sanity_val_steps"}}
    before = _repo_runs()
    # the config's relative run folders (trainer.default_root_dir and the loggers, which follow it) resolve in tmp_path
    monkeypatch.chdir(tmp_path)
    code = main(["fit", "--config", str(config), "--data.root", str(root), "--mano-dir", str(standin_dir),
                 "--data.batch_size", "2", "--data.num_workers", "0", *extra, "--trainer.max_steps", str(STEPS),
                 "--trainer.val_check_interval", str(STEPS), "--trainer.check_val_every_n_epoch", "null",
                 "--trainer.limit_val_batches", "1", "--trainer.num_sanity_val_steps", "0"])
    assert code == 0
    assert _repo_runs() == before  # nothing written into the repository

    trainer = written.get("trainer") or {}
    run = tmp_path / trainer.get("default_root_dir", ".")
    last = read_checkpoint(run / "checkpoints" / "last.ckpt")
    assert last["global_step"] == STEPS
    assert (run / "checkpoints" / "best.ckpt").is_file()  # ranked on the validation PA-MPJPE

    (saved_config,) = tmp_path.rglob("config.yaml")  # what LightningCLI ran, saved next to the first logger's files
    saved = yaml.safe_load(saved_config.read_text())
    for section, values in written.items():
        if isinstance(values, dict):
            kept = {key: value for key, value in values.items() if key not in overridden.get(section, ())}
            assert _is_subset(kept, saved[section]), f"{section} differs from {config.name}"
        else:
            assert saved[section] == values, section

    loggers = trainer.get("logger") or []
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        args = logger.get("init_args", {})
        folder = tmp_path / args["save_dir"] if "save_dir" in args else run  # no save_dir: the run folder
        assert (folder / args.get("name", "lightning_logs")).is_dir(), logger
    for metrics in tmp_path.rglob("metrics.csv"):  # a CSVLogger's table
        values = [row["val/pa_mpjpe_mm"] for row in csv.DictReader(metrics.open()) if row.get("val/pa_mpjpe_mm")]
        assert len(values) == 1 and math.isfinite(float(values[0]))

    if weights is not None:  # training started from the stand-in weights: 2 warm-up steps barely move them
        state = last["state_dict"]
        for key, value in weights.items():
            name = f"model.encoder.backbone.{key}"
            if name in state and "running_" not in key and "num_batches" not in key:
                torch.testing.assert_close(state[name], value, rtol=0, atol=1e-4, msg=name)
