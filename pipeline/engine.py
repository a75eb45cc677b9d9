"""One training epoch and one evaluation pass, independent of where batches come from.

The local run feeds them from memory; the Ray Train worker loop (pipeline issue) feeds
them from Ray Data shards. Both report the same metrics.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from pipeline.config import EvalConfig, LossConfig
from pipeline.samples import to_model_input
from ssd_core.loss import multibox_loss
from ssd_core.metrics import evaluate_voc
from ssd_core.models.ssd import SSD
from ssd_core.postprocess import detect


@dataclass
class EpochStats:
    loss: float
    loss_loc: float
    loss_cls: float
    images: int
    seconds: float
    lr: float

    @property
    def images_per_s(self) -> float:
        return self.images / max(self.seconds, 1e-9)


def train_one_epoch(
    model: SSD,
    batches: Iterable[tuple[Tensor, Tensor, Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loss_cfg: LossConfig,
    grad_clip: float | None = None,
) -> EpochStats:
    """Train over ``(images [B,3,S,S], loc_targets [B,P,4], labels [B,P])`` batches.

    Raises:
        FloatingPointError: the loss became NaN or inf (with the iteration named).
    """
    model.train()
    totals = {"loss": 0.0, "loss_loc": 0.0, "loss_cls": 0.0}
    images, steps, start = 0, 0, time.perf_counter()
    for images_t, loc_targets, labels in batches:
        loc, conf = model(images_t)
        losses = multibox_loss(
            loc, conf, loc_targets, labels, loss_cfg.alpha, loss_cfg.neg_pos_ratio, loss_cfg.min_negatives
        )
        if not torch.isfinite(losses["loss"]):
            raise FloatingPointError(f"loss is {losses['loss'].item()} at iteration {steps} of this epoch")
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        scheduler.step()
        for k in totals:
            totals[k] += losses[k].item()
        images += images_t.shape[0]
        steps += 1
    n = max(steps, 1)
    return EpochStats(
        loss=totals["loss"] / n,
        loss_loc=totals["loss_loc"] / n,
        loss_cls=totals["loss_cls"] / n,
        images=images,
        seconds=time.perf_counter() - start,
        lr=optimizer.param_groups[0]["lr"],
    )


@torch.no_grad()
def predict(
    model: SSD, images: Sequence[np.ndarray], cfg: EvalConfig, channels_last: bool = False
) -> list[dict[str, Tensor]]:
    """Detections for uint8 ``[H, W, 3]`` images, boxes in their own pixels."""
    model.eval()
    out: list[dict[str, Tensor]] = []
    for i in range(0, len(images), cfg.batch_size):
        chunk = images[i : i + cfg.batch_size]
        loc, conf = model(to_model_input(chunk, model, channels_last))
        out += detect(
            loc,
            conf,
            model.priors,
            [im.shape[:2] for im in chunk],
            cfg.score_threshold,
            cfg.nms_threshold,
            cfg.top_k,
            cfg.max_detections,
        )
    return out


def evaluate(
    model: SSD,
    images: Sequence[np.ndarray],
    ground_truths: Sequence[dict],
    cfg: EvalConfig,
    channels_last: bool = False,
) -> dict:
    """VOC07 11-point mAP@0.5 of ``model`` on uint8 ``[H, W, 3]`` images and their ground
    truth (``boxes`` in pixels, ``labels``, optional ``difficult``), with the per-class
    precision-recall curves (``"curves"``)."""
    detections = predict(model, images, cfg, channels_last)
    return evaluate_voc(detections, ground_truths, iou_threshold=0.5, use_07_metric=True, curves=True)
