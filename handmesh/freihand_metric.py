"""`FreiHANDMetric`: the official FreiHAND measures (`handmesh.metrics`) as a torchmetrics `Metric`, for training.

Its states are the fields of `metrics.ScoreTotals` (all sums, reduced by summing under DDP), so validation scores
equal `handmesh evaluate`'s on the same predictions. Kept apart from `metrics.py` so that scoring a pred.json does
not import torchmetrics.
"""

from __future__ import annotations

from dataclasses import fields

import torch
from torchmetrics import Metric

from handmesh.joints import NUM_VERTICES
from handmesh.metrics import PER_SAMPLE_KEYS, FreiHANDScores, PCKCurves, ScoreTotals


class FreiHANDMetric(Metric):
    """Accumulates the official FreiHAND measures; every state is a sum, so a DDP sync is exact and memory is O(1)
    in the number of samples (unless `keep_per_sample`, which also keeps a (N, 8) table of `PER_SAMPLE_KEYS`).

    metric.update(pred_keypoints (B, 21, 3), pred_vertices (B, 778, 3), gt_keypoints (B, 21, 3),
    gt_vertices (B, 778, 3)), all metres in the camera frame; metric.compute() -> FreiHANDScores.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, num_vertices: int = NUM_VERTICES, keep_per_sample: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_vertices = num_vertices
        self.keep_per_sample = keep_per_sample
        zeros = ScoreTotals.zeros(num_vertices)
        for field in fields(ScoreTotals):
            self.add_state(field.name, getattr(zeros, field.name), dist_reduce_fx="sum")
        if keep_per_sample:
            self.add_state("per_sample_rows", [], dist_reduce_fx="cat")  # (B, 8) float64 per update

    def _totals(self) -> ScoreTotals:
        """The states, as totals whose in-place updates are the states' own."""
        return ScoreTotals(**{field.name: getattr(self, field.name) for field in fields(ScoreTotals)})

    def update(self, pred_keypoints: torch.Tensor, pred_vertices: torch.Tensor, gt_keypoints: torch.Tensor,
               gt_vertices: torch.Tensor) -> None:
        errors = self._totals().update(pred_keypoints, pred_vertices, gt_keypoints, gt_vertices)
        if self.keep_per_sample:
            self.per_sample_rows.append(torch.stack(list(errors.per_sample().values()), dim=1))

    def compute(self) -> FreiHANDScores:
        return self._totals().scores()

    def curves(self) -> PCKCurves:
        """Mean PCK curves from the accumulated counts (for plots)."""
        return self._totals().curves()

    def per_sample(self) -> dict[str, torch.Tensor]:
        """PER_SAMPLE_KEYS -> (N,) float64 in update order (needs keep_per_sample=True)."""
        if not self.keep_per_sample:
            raise ValueError("FreiHANDMetric.per_sample() needs FreiHANDMetric(keep_per_sample=True)")
        rows = self.per_sample_rows
        table = torch.cat(rows) if isinstance(rows, list) else rows  # a list before a sync, one tensor after
        return dict(zip(PER_SAMPLE_KEYS, table.unbind(1)))
