"""A tiny FreiHAND-format folder for the model and training tests, made by the project's own `handmesh synth`.

Kept in pytest's cache folder and reused across sessions (`synthesize` reuses a complete folder with the same settings).
8 unique training samples x 4 versions = 32 images (4 held out for validation by `val_fraction=0.05`), 4 evaluation.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from handmesh.data.synth import synthesize

N_TRAIN, N_EVAL = 8, 4


def tiny_synthetic_set(config: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = getattr(config, "cache", None)  # None with -p no:cacheprovider: then a fresh folder per session
    base = Path(cache.mkdir("handmesh-model-tests")) if cache is not None else tmp_path_factory.mktemp("model-tests")
    folder = base / f"freihand_{N_TRAIN}_{N_EVAL}"
    return synthesize(None, folder, N_TRAIN, N_EVAL, seed=0, progress=False, log=None).root


def tiny_checkpoint(root: Path, run: Path, input_size: int = 64) -> Path:
    """last.ckpt of two training steps of the quickstart recipe on `root`, at `input_size` px, written under `run`."""
    from handmesh.cli import main

    code = main(["fit", "--config", "configs/quickstart.yaml", "--data.root", str(root), "--data.batch_size", "4",
                 "--data.num_workers", "0", "--model.input_size", str(input_size), "--trainer.max_steps", "2",
                 "--trainer.limit_val_batches", "0", "--trainer.default_root_dir", str(run),
                 "--trainer.logger", "false", "--trainer.callbacks", "[]"])
    assert code == 0
    return run / "checkpoints" / "last.ckpt"
