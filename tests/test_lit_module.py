"""LightningModule: LR schedule, optimiser groups, checkpoint metadata, and that it learns (overfits 4 samples)."""

from __future__ import annotations

import inspect
import math
from dataclasses import fields

import pytest
import pytorch_lightning as pl
import pytorch_lightning.callbacks.timer as timer_module
import torch
from pytorch_lightning.callbacks import Timer
from torch.utils.data import DataLoader, Subset

from handmesh.checkpoints import METADATA_KEY, read_checkpoint
from handmesh.data.freihand import FreiHANDDataset
from handmesh.errors import CheckpointError
from handmesh.lit_module import HandMeshModule, time_limit, warmup_cosine
from handmesh.models.hand_model import HandModelConfig

from tiny_synth import tiny_synthetic_set

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def root(pytestconfig, tmp_path_factory):
    return tiny_synthetic_set(pytestconfig, tmp_path_factory)


def test_warmup_then_cosine():
    factor = warmup_cosine(warmup_steps=10, total_steps=110, min_ratio=0.1)
    assert factor(0) == pytest.approx(0.1)
    assert factor(4) == pytest.approx(0.5)
    assert factor(9) == pytest.approx(1.0)
    assert factor(10) == pytest.approx(1.0)
    assert factor(60) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the cosine
    assert factor(110) == pytest.approx(0.1)
    assert factor(500) == pytest.approx(0.1)  # stays at the floor past the end


def test_a_time_limit_anneals_a_slow_run_and_leaves_a_fast_one_alone():
    clock = [50.0, 100.0]  # seconds spent, limit
    factor = warmup_cosine(warmup_steps=10, total_steps=110, min_ratio=0.1, clock=lambda: tuple(clock))
    assert factor(5) == pytest.approx(0.6)  # the warmup counts steps only
    assert factor(10) == pytest.approx(1.0)  # the first step after it anchors the clock: steps decide
    clock[0] = 75.0  # half the time left has passed at step 20, a tenth of the steps: the time decides
    assert factor(20) == pytest.approx(0.1 + 0.9 * 0.5)
    clock[0] = 80.0
    assert factor(20) == pytest.approx(0.1 + 0.9 * 0.5)  # one answer per step, for every parameter group
    assert factor(100) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.9)))  # steps ahead of time
    clock[0] = 101.0
    assert factor(30) == pytest.approx(0.1)  # past the limit: the floor


def test_time_limit_reads_lightnings_timer(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(timer_module.time, "monotonic", lambda: now[0])
    trainer = pl.Trainer(max_steps=110, max_time={"seconds": 100}, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False)
    spent = time_limit(trainer)
    next(c for c in trainer.callbacks if isinstance(c, Timer)).on_train_start(trainer, None)
    now[0] += 30.0
    assert spent() == pytest.approx((30.0, 100.0))
    assert time_limit(pl.Trainer(max_steps=5, logger=False, enable_checkpointing=False)) is None


def test_the_network_arguments_are_hand_model_config():
    """Spelled flat (`--model.encoder`), with HandModelConfig's names, types and defaults, and passed on whole."""
    parameters = inspect.signature(HandMeshModule).parameters
    for field in fields(HandModelConfig):
        assert parameters[field.name].default == field.default, field.name
        assert parameters[field.name].annotation == field.type, field.name
    module = HandMeshModule(encoder="fastvit_t8", input_size=64, pose_pca=2, keypoint_head=True,
                            mean_camera=(6.0, 0.1, 0.0))
    assert module.model.config == HandModelConfig(encoder="fastvit_t8", input_size=64, pose_pca=2,
                                                  keypoint_head=True, mean_camera=(6.0, 0.1, 0.0))
    assert module.hparams["mean_camera"] == [6.0, 0.1, 0.0]  # plain values: checkpoints load with weights_only


def test_optimizer_groups_scale_the_encoder_and_skip_decay_on_norms():
    module = HandMeshModule(encoder="fastvit_t8", input_size=64, lr=1e-3, encoder_lr_mult=0.1, weight_decay=0.05)
    module.trainer = pl.Trainer(max_steps=50, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    config = module.configure_optimizers()
    groups = config["optimizer"].param_groups
    assert [group["initial_lr"] for group in groups] == pytest.approx([1e-4, 1e-4, 1e-3, 1e-3])
    assert [group["weight_decay"] for group in groups] == [0.05, 0.0, 0.05, 0.0]
    assert all(parameter.ndim > 1 for parameter in groups[0]["params"] + groups[2]["params"])
    counted = sum(parameter.numel() for group in groups for parameter in group["params"])
    assert counted == sum(parameter.numel() for parameter in module.parameters())
    assert config["lr_scheduler"]["interval"] == "step"


def _validate(trainer: pl.Trainer, module: HandMeshModule, loader: DataLoader) -> float:
    return trainer.validate(module, loader, verbose=False)[0]["val/pa_mpjpe_mm"]


@pytest.mark.slow
def test_overfits_four_samples_and_writes_a_loadable_checkpoint(root, tmp_path):
    torch.manual_seed(0)
    data = Subset(FreiHANDDataset(root, split="training", input_size=64, progress=False), [0, 1, 2, 3])
    loader = DataLoader(data, batch_size=4, shuffle=False)
    module = HandMeshModule(encoder="fastvit_t8", input_size=64, lr=2e-3, warmup_steps=10)
    trainer = pl.Trainer(max_steps=100, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                         enable_model_summary=False, num_sanity_val_steps=0, check_val_every_n_epoch=100)
    before = _validate(trainer, module, loader)
    trainer.fit(module, loader, loader)
    after = _validate(trainer, module, loader)
    assert after <= 0.5 * before, f"PA-MPJPE {before:.2f} -> {after:.2f} mm after 100 steps on 4 samples"

    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = read_checkpoint(path)  # torch.load(weights_only=True): plain values only
    assert checkpoint[METADATA_KEY]["model_args"] == module.model.config.as_dict()
    assert checkpoint["hyper_parameters"]["loss_weights"]["keypoints_3d"] == module.loss_weights.keypoints_3d
    other = HandMeshModule(encoder="fastvit_t8", input_size=96)
    with pytest.raises(CheckpointError, match="input_size: checkpoint 64, configured 96"):
        other.on_load_checkpoint(checkpoint)


def test_lr_follows_the_schedule_per_step(root):
    loader = DataLoader(Subset(FreiHANDDataset(root, split="training", input_size=32, progress=False), [0, 1]),
                        batch_size=2)
    module = HandMeshModule(encoder="fastvit_t8", input_size=32, lr=1e-3, warmup_steps=2, min_lr_ratio=0.0)
    seen = []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer = pl.Trainer(max_steps=4, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                         enable_model_summary=False, limit_val_batches=0, callbacks=[Record()])
    trainer.fit(module, loader)
    cosine = [0.5 * (1 + math.cos(math.pi * k / 2)) for k in (0, 1)]
    assert seen == pytest.approx([5e-4, 1e-3, 1e-3 * cosine[0], 1e-3 * cosine[1]])


@pytest.mark.parametrize("gl", [True, False])
def test_validation_images_reach_tensorboard(root, tmp_path, monkeypatch, gl):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import handmesh.callbacks
    from handmesh.callbacks import ValidationMeshImages
    from handmesh.render import RendererUnavailable

    if not gl:
        def no_gl(*args, **kwargs):
            raise RendererUnavailable("no OpenGL here (test)")

        monkeypatch.setattr(handmesh.callbacks, "MeshRenderer", no_gl)
    loader = DataLoader(Subset(FreiHANDDataset(root, split="training", input_size=64, progress=False), [0, 1, 2]),
                        batch_size=3)
    logger = pl.loggers.TensorBoardLogger(tmp_path, name="tb")
    trainer = pl.Trainer(logger=logger, callbacks=[ValidationMeshImages(num_images=2)], enable_progress_bar=False,
                         enable_model_summary=False)
    module = HandMeshModule(encoder="fastvit_t8", input_size=64)
    if gl:
        trainer.validate(module, loader, verbose=False)
    else:
        with pytest.warns(UserWarning, match="drawn with OpenCV instead of OpenGL"):
            trainer.validate(module, loader, verbose=False)
    events = EventAccumulator(str(logger.log_dir), size_guidance={"images": 0})
    events.Reload()
    (image,) = events.Images("val/mesh_overlay")
    assert (image.width, image.height) == (2 * 64, 64)  # two crops side by side


@pytest.mark.slow
def test_bf16_mixed_trains_with_float32_geometry(root):
    """Lightning's bf16-mixed (the paper recipe) on the CPU: the encoder runs in bfloat16; MANO, the camera, the
    losses and the metrics in float32 (their SVD and det have no bfloat16 kernels); training steps and validation run.
    (16-mixed is bf16-mixed on the CPU in Lightning; test_losses.py covers float16 autocast.)"""
    loader = DataLoader(Subset(FreiHANDDataset(root, split="training", input_size=32, progress=False), [0, 1]),
                        batch_size=2)
    module = HandMeshModule(encoder="fastvit_t8", input_size=32, warmup_steps=1)
    dtypes = {}

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            with trainer.precision_plugin.forward_context():
                output = pl_module(batch["image"], batch["K"])
                dtypes["features"] = pl_module.model.encoder(batch["image"]).dtype
            dtypes.update({name: getattr(output, name).dtype for name in ("vertices", "keypoints_2d", "betas")})
            dtypes["loss"] = outputs["loss"].dtype

    trainer = pl.Trainer(accelerator="cpu", precision="bf16-mixed", max_steps=2, logger=False,
                         enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
                         num_sanity_val_steps=0, callbacks=[Record()])
    before = [p.detach().clone() for p in module.model.regressor.parameters()]
    trainer.fit(module, loader, loader)
    assert trainer.global_step == 2
    assert dtypes["features"] == torch.bfloat16
    assert {dtypes[name] for name in ("vertices", "keypoints_2d", "betas", "loss")} == {torch.float32}
    assert any(not torch.equal(a, b) for a, b in zip(before, module.model.regressor.parameters()))
    assert math.isfinite(trainer.callback_metrics["val/pa_mpjpe_mm"])
