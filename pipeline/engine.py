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
from torch import Tensor, nn

from pipeline.config import EvalConfig, LossConfig, TrainConfig
from pipeline.samples import normalise
from ssd_core.augment import resize_for_eval
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
    data_wait_s: float = 0.0  # of ``seconds``, spent waiting for the next batch

    @property
    def data_wait_fraction(self) -> float:
        """How much of the epoch the model waited for data: near 0 when the input
        pipeline keeps up, large when it starves training."""
        return self.data_wait_s / max(self.seconds, 1e-9)

    @property
    def images_per_s(self) -> float:
        return self.images / max(self.seconds, 1e-9)


def unwrap(model: nn.Module) -> SSD:
    """The SSD inside a DistributedDataParallel wrapper (or the model itself)."""
    return getattr(model, "module", model)


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor, Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loss_cfg: LossConfig,
    train_cfg: TrainConfig,
    device: torch.device | str = "cpu",
    scaler: torch.amp.GradScaler | None = None,
) -> EpochStats:
    """Train over ``(images [B, S, S, 3] uint8, loc_targets [B, P, 4], labels [B, P])``
    batches; images are normalised on ``device``. With an enabled ``scaler`` (CUDA) the
    forward pass runs in fp16 autocast; the loss is computed in fp32 either way.

    Raises:
        FloatingPointError: the loss became NaN or inf (with the iteration named).
    """
    model.train()
    net, device = unwrap(model), torch.device(device)
    amp = scaler is not None and scaler.is_enabled()
    totals = torch.zeros(3, dtype=torch.float64)
    images, steps, start, waited = 0, 0, time.perf_counter(), 0.0
    iterator = iter(batches)
    while True:
        asked = time.perf_counter()
        batch = next(iterator, None)
        waited += time.perf_counter() - asked
        if batch is None:
            break
        images_u8, loc_targets, labels = batch
        x = normalise(images_u8.to(device, non_blocking=True), net, train_cfg.channels_last)
        loc_targets, labels = loc_targets.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            loc, conf = model(x)
        losses = multibox_loss(
            loc, conf, loc_targets, labels, loss_cfg.alpha, loss_cfg.neg_pos_ratio, loss_cfg.min_negatives
        )
        if not torch.isfinite(losses["loss"]):
            raise FloatingPointError(f"loss is {losses['loss'].item()} at iteration {steps} of this epoch")
        optimizer.zero_grad(set_to_none=True)
        if amp:
            scaler.scale(losses["loss"]).backward()
            if train_cfg.grad_clip is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            losses["loss"].backward()
            if train_cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
            optimizer.step()
        scheduler.step()
        # One host sync per step (the isfinite check above needs it anyway).
        totals += torch.stack([losses["loss"], losses["loss_loc"], losses["loss_cls"]]).detach().double().cpu()
        images += images_u8.shape[0]
        steps += 1
    mean = (totals / max(steps, 1)).tolist()
    return EpochStats(
        loss=mean[0],
        loss_loc=mean[1],
        loss_cls=mean[2],
        images=images,
        seconds=time.perf_counter() - start,
        lr=optimizer.param_groups[0]["lr"],
        data_wait_s=waited,
    )


@torch.no_grad()
def detect_resized(
    model: nn.Module, images: Tensor, sizes: Sequence[tuple[int, int]], cfg: EvalConfig,
    channels_last: bool = False, device: torch.device | str = "cpu",
) -> list[dict[str, Tensor]]:
    """Detections for uint8 ``[B, S, S, 3]`` images already resized to the model's input,
    boxes in the pixels of the originals of ``sizes`` (``(height, width)`` each), on CPU."""
    net = unwrap(model)
    net.eval()
    loc, conf = net(normalise(images.to(device), net, channels_last))
    found = detect(
        loc.float(), conf.float(), net.priors, list(sizes), cfg.score_threshold, cfg.nms_threshold, cfg.top_k,
        cfg.max_detections,
    )  # fmt: skip
    return [{k: v.cpu() for k, v in d.items()} for d in found]


@torch.no_grad()
def predict(
    model: SSD, images: Sequence[np.ndarray], cfg: EvalConfig, channels_last: bool = False,
    device: torch.device | str = "cpu",
) -> list[dict[str, Tensor]]:  # fmt: skip
    """Detections for uint8 ``[H, W, 3]`` images of any size, boxes in their own pixels
    (on CPU; ``device`` is where the model is)."""
    out: list[dict[str, Tensor]] = []
    for i in range(0, len(images), cfg.batch_size):
        chunk = images[i : i + cfg.batch_size]
        size = model.image_size
        resized = np.stack([im if im.shape[:2] == (size, size) else resize_for_eval(im, size) for im in chunk])
        out += detect_resized(model, torch.from_numpy(resized), [im.shape[:2] for im in chunk], cfg, channels_last,
                              device)  # fmt: skip
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
