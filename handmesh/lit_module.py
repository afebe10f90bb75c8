"""LightningModule: HandModel + losses + FreiHAND metrics + AdamW with warmup and cosine decay (per step).

Arguments are plain values (LightningCLI builds them from YAML and stores them as the checkpoint's hyper_parameters);
the network's settings (`HandModelConfig`) are also stored under `checkpoint["handmesh"]` for `inference.Predictor`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict
from typing import Callable, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Timer
from pytorch_lightning.utilities import rank_zero_info
from pytorch_lightning.utilities.warnings import PossibleUserWarning

from handmesh.checkpoints import FORMAT_VERSION, METADATA_KEY, metadata
from handmesh.errors import CheckpointError, HandmeshError
from handmesh.freihand_metric import FreiHANDMetric
from handmesh.geometry import in_float32
from handmesh.losses import LossWeights, hand_losses
from handmesh.mano import ManoLayer
from handmesh.mano_file import resolve_mano_dir
from handmesh.metrics import SCORE_KEYS
from handmesh.models.hand_model import HandModel, HandModelConfig, HandOutput

STAGES = ("val", "test")
# Lightning's advice to sync each epoch-level value across processes (`sync_dist=True`), for the scores that
# torchmetrics has already synced: it cannot tell them from per-process values (Lightning issue #20153)
_SYNCED_ALREADY = rf"It is recommended to use `self\.log\('({'|'.join(STAGES)})/({'|'.join(SCORE_KEYS)})'"


class HandMeshModule(pl.LightningModule):
    """Trains `HandModel` on FreiHAND-format batches (docs/data.md, "Data batches"); logs `val/pa_mpjpe_mm` and friends.

    encoder / input_size / head / mean_camera / pose_pca / keypoint_head: the fields of `HandModelConfig`, with its
    defaults, spelled flat so that `--model.encoder` and the hyper-parameters of existing checkpoints keep their
    names. pretrained: None, "timm" (timm's ImageNet weights: the Hugging Face cache, else a download) or a weights
    file; drop_path_rate: stochastic depth in the encoder. mano_dir: MANO folder (None: $HANDMESH_MANO_DIR,
    data/mano, else the stand-in). loss_weights: see `losses.LossWeights`.
    lr: peak learning rate of the regressor; the encoder's is lr x encoder_lr_mult. warmup_steps: linear warmup, then
    cosine decay to lr x min_lr_ratio at the last step (trainer.max_steps or max_epochs must bound training), or at
    trainer.max_time if that comes first: a machine too slow for the steps still ends its run annealed.
    """

    def __init__(
        self,
        encoder: str = HandModelConfig.encoder,
        input_size: int = HandModelConfig.input_size,
        head: Literal["ief", "transformer"] = HandModelConfig.head,
        mean_camera: tuple[float, float, float] = HandModelConfig.mean_camera,
        pose_pca: int = HandModelConfig.pose_pca,
        keypoint_head: bool = HandModelConfig.keypoint_head,
        pretrained: str | None = None,
        drop_path_rate: float = 0.0,
        mano_dir: str | None = None,
        lr: float = 5e-4,
        weight_decay: float = 1e-4,
        encoder_lr_mult: float = 1.0,
        warmup_steps: int = 500,
        min_lr_ratio: float = 0.01,
        loss_weights: LossWeights = LossWeights(),
    ):
        super().__init__()
        self.save_hyperparameters()
        self.hparams["loss_weights"] = asdict(loss_weights)  # plain values: checkpoints load with weights_only
        self.hparams["mean_camera"] = list(mean_camera)
        source = resolve_mano_dir(mano_dir)
        rank_zero_info(source.describe())
        network = HandModelConfig(encoder=encoder, input_size=input_size, head=head, mean_camera=mean_camera,
                                  pose_pca=pose_pca, keypoint_head=keypoint_head)
        self.model = HandModel(ManoLayer.from_dir(source.directory), network, pretrained=pretrained,
                               drop_path_rate=drop_path_rate)
        self.loss_weights = loss_weights
        self.metrics = torch.nn.ModuleDict({stage: FreiHANDMetric() for stage in STAGES})  # separate state per stage

    def forward(self, images: torch.Tensor, K: torch.Tensor) -> HandOutput:
        return self.model(images, K)

    @in_float32  # the target rotations (MANO) and every loss term, whatever the trainer's precision
    def _losses(self, output: HandOutput, batch: dict) -> dict[str, torch.Tensor]:
        target_pose = self.model.mano.pose_from_axis_angle(batch["mano_pose"], add_hands_mean=True)  # (B, 16, 3, 3)
        return hand_losses(
            output.keypoints_rel, output.vertices_rel, output.keypoints_2d, output.pose_rotmat, output.betas,
            batch["keypoints_3d"], batch["vertices"], batch["keypoints_2d"], target_pose, batch["mano_shape"],
            batch["has_mano"], crop_size=batch["image"].shape[-1], weights=self.loss_weights,
            pred_keypoints_2d_heatmap=output.keypoints_2d_heatmap,
        )

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        output = self.model(batch["image"], batch["K"])
        losses = self._losses(output, batch)
        size = batch["image"].shape[0]
        self.log("train/loss", losses["total"], prog_bar=True, batch_size=size)
        self.log_dict({f"train/{name}": value for name, value in losses.items() if name != "total"}, batch_size=size)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=size)
        return losses["total"]

    def _evaluation_step(self, stage: str, batch: dict) -> dict:
        output = self.model(batch["image"], batch["K"])
        self.metrics[stage].update(output.keypoints_3d, output.vertices, batch["keypoints_3d"], batch["vertices"])
        self.log(f"{stage}/loss", self._losses(output, batch)["total"], sync_dist=True,
                 batch_size=batch["image"].shape[0])
        return {"vertices": output.vertices.detach()}  # (B, 778, 3) camera frame, for ValidationMeshImages

    def validation_step(self, batch: dict, batch_idx: int) -> dict:
        return self._evaluation_step("val", batch)

    def test_step(self, batch: dict, batch_idx: int) -> dict:
        return self._evaluation_step("test", batch)

    def setup(self, stage: str) -> None:
        warnings.filterwarnings("ignore", message=_SYNCED_ALREADY, category=PossibleUserWarning)

    def _log_metrics(self, stage: str) -> None:
        # synced across processes by torchmetrics: every process logs the same values, without Lightning's sync_dist
        values = self.metrics[stage].compute().as_dict()
        shown = "pa_mpjpe_mm"
        self.log_dict({f"{stage}/{name}": float(value) for name, value in values.items()
                       if name != shown and value is not None})
        self.log(f"{stage}/{shown}", float(values[shown]), prog_bar=True)

    # Reset when a stage starts, in that stage's grad mode: states made under `trainer.validate`'s inference mode
    # cannot be updated in place by the no-grad validation inside `trainer.fit`.
    def on_validation_epoch_start(self) -> None:
        self.metrics["val"].reset()

    def on_test_epoch_start(self) -> None:
        self.metrics["test"].reset()

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def configure_optimizers(self):
        hp = self.hparams
        groups = []
        heads = [self.model.regressor] + ([self.model.keypoint_head] if self.model.keypoint_head is not None else [])
        for module, lr in ((self.model.encoder, hp.lr * hp.encoder_lr_mult), *((head, hp.lr) for head in heads)):
            decay, no_decay = [], []
            for name, parameter in module.named_parameters():
                if parameter.requires_grad:
                    plain = parameter.ndim <= 1 or name.endswith(".bias") or "layer_scale" in name
                    (no_decay if plain else decay).append(parameter)
            groups += [{"params": decay, "lr": lr, "weight_decay": hp.weight_decay},
                       {"params": no_decay, "lr": lr, "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW(groups, lr=hp.lr)
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise HandmeshError("training length is unbounded: the cosine schedule needs trainer.max_steps or "
                                "trainer.max_epochs (max_time alone only stops it). Set one of them.")
        factor = warmup_cosine(hp.warmup_steps, int(total), hp.min_lr_ratio, time_limit(self.trainer))
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[METADATA_KEY] = {
            "format": FORMAT_VERSION,
            "model_args": self.model.config.as_dict(),
            "mano": {"is_standin": bool(self.model.mano.is_standin), "source": self.model.mano.source},
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        try:
            saved = HandModelConfig.from_dict(metadata(checkpoint, "the checkpoint")["model_args"]).as_dict()
        except HandmeshError as error:
            raise CheckpointError(f"the checkpoint describes a network this handmesh cannot build: {error}") from None
        current = self.model.config.as_dict()
        different = {key: (saved[key], value) for key, value in current.items() if saved[key] != value}
        if different:
            details = ", ".join(f"{key}: checkpoint {old!r}, configured {new!r}"
                                for key, (old, new) in different.items())
            raise CheckpointError(f"the checkpoint was trained with another network ({details}); pass the training "
                                  "config (--config) or the matching --model.* options.")


def time_limit(trainer: pl.Trainer) -> Callable[[], tuple[float, float]] | None:
    """() -> (seconds spent, trainer.max_time in seconds), resumed runs included; None without a max_time."""
    timer = next((callback for callback in trainer.callbacks if isinstance(callback, Timer)), None)
    if timer is None or timer.time_remaining() is None:
        return None

    def spent() -> tuple[float, float]:
        elapsed = timer.time_elapsed()
        return elapsed, elapsed + timer.time_remaining()

    return spent


def warmup_cosine(warmup_steps: int, total_steps: int, min_ratio: float,
                  clock: Callable[[], tuple[float, float]] | None = None):
    """LR factor per optimizer step: linear warmup from 1/warmup_steps to 1, then cosine down to min_ratio.

    clock: () -> (seconds spent, time limit), or None. With one, the cosine also keeps pace with the clock: from the
    first step after the warmup (or after a resume), the rest of it is spread over the rest of the time, and the
    larger progress wins. A run too slow for its steps ends annealed at the limit; one fast enough follows its steps.
    """
    anchor: tuple[float, float] | None = None  # (progress, seconds spent) where the time began to count
    answered: dict[int, float] = {}  # LambdaLR asks once per parameter group: every group gets the step's first answer

    def factor(step: int) -> float:
        nonlocal anchor
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if step in answered:
            return answered[step]
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        if clock is not None:
            spent, limit = clock()
            anchor = anchor or (progress, spent)
            start, start_spent = anchor
            # progress by the clock: p0 + (1 - p0) (t - t0) / (T - t0), from (p0, t0) at the anchor to 1 at the limit T
            progress = max(progress, start + (1.0 - start) * (spent - start_spent) / max(limit - start_spent, 1e-9))
        answered.clear()
        answered[step] = min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return answered[step]

    return factor
