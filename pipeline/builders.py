"""Config -> ssd_core objects: the one place that maps config fields to constructor args."""

from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.config import ModelConfig, TrainConfig
from ssd_core.models import ssd300_vgg16, ssd512_vgg16, ssd_light
from ssd_core.models.ssd import SSD
from ssd_core.priors import scales_from_range

_MAPS = {"ssd300": 6, "ssd512": 7}
LIGHT_EXTRAS = 3


def model_scales(cfg: ModelConfig, num_maps: int) -> list[float] | None:
    """The m + 1 default-box scales the config asks for, or None for the model's own."""
    if cfg.scales is not None:
        return list(cfg.scales)
    if cfg.s_min is None and cfg.s_max is None:
        return None
    if cfg.s_min is None or cfg.s_max is None:
        raise ValueError("model.s_min and model.s_max go together")
    return scales_from_range(cfg.s_min, cfg.s_max, num_maps, first_scale=cfg.first_scale)


def build_model(cfg: ModelConfig, num_classes: int) -> SSD:
    """The SSD the config names, for ``num_classes`` classes including background."""
    if cfg.name == "light":
        # The light model predicts from stride 8 and 16 plus its extra maps.
        scales = model_scales(cfg, 2 + LIGHT_EXTRAS)
        return ssd_light(num_classes, cfg.image_size, cfg.width, scales, num_extras=LIGHT_EXTRAS)
    if cfg.name in _MAPS:
        factory = ssd300_vgg16 if cfg.name == "ssd300" else ssd512_vgg16
        return factory(num_classes, batch_norm=cfg.batch_norm, scales=model_scales(cfg, _MAPS[cfg.name]))
    raise ValueError(f"unknown model.name {cfg.name!r} (light, ssd300, ssd512)")


def scaled_lr(cfg: TrainConfig, world_size: int) -> float:
    """``cfg.lr`` scaled linearly from ``lr_batch`` images to the global batch."""
    return cfg.lr * cfg.batch_size * world_size / cfg.lr_batch


def build_optimizer(model: nn.Module, cfg: TrainConfig, world_size: int = 1) -> torch.optim.SGD:
    """SGD with momentum at :func:`scaled_lr`; no weight decay on biases, BN and L2Norm
    scales (their decay only shrinks the scale the layer is there to learn)."""
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=scaled_lr(cfg, world_size), momentum=cfg.momentum)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_iters: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup, then ``cfg.schedule``: ``multistep`` (x ``gamma`` at each of
    ``milestones``, fractions of ``total_iters``) or ``cosine`` (to zero at
    ``total_iters``); stepped once per iteration."""
    if cfg.schedule not in ("multistep", "cosine"):
        raise ValueError(f"unknown train.schedule {cfg.schedule!r} (multistep, cosine)")
    # Rounded, so that 0.666667 of 120k is Caffe's 80k (a YAML file cannot say 2/3).
    steps = [round(m * total_iters) for m in cfg.milestones]

    def factor(it: int) -> float:
        warm = min(1.0, (it + 1) / cfg.warmup_iters) if cfg.warmup_iters > 0 else 1.0
        if cfg.schedule == "cosine":
            return warm * 0.5 * (1.0 + math.cos(math.pi * min(it, total_iters) / max(total_iters, 1)))
        return warm * cfg.gamma ** sum(it >= s for s in steps)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
