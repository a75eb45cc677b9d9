"""Train and evaluate in this process: the smallest honest end-to-end run.

No Ray and no MLflow yet: it generates the shapes set, trains the configured SSD with
the paper's loss and SGD schedule, prints one line per epoch (loss, images/s, ETA) and
the validation mAP, and returns the figures. The Ray Train worker loop reuses
:mod:`pipeline.engine` unchanged.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from pipeline.builders import build_model, build_optimizer, build_scheduler
from pipeline.config import ExperimentConfig
from pipeline.engine import evaluate, train_one_epoch
from pipeline.samples import encode_batch, hflip, to_model_input
from ssd_core.data.shapes import SHAPE_CLASSES, ShapeSample, generate_shapes
from ssd_core.matching import TargetEncoder
from ssd_core.models.ssd import SSD


def load_samples(cfg: ExperimentConfig) -> tuple[list[ShapeSample], list[ShapeSample], tuple[str, ...]]:
    """Train and validation samples and the class names (background excluded)."""
    if cfg.data.source != "shapes":
        raise ValueError(f"data.source {cfg.data.source!r}: the local run reads only the generated 'shapes' set so far")
    d = cfg.data
    train = generate_shapes(d.num_train, d.seed, d.shapes_image_size, d.shapes_max_objects)
    # Validation images come from another seed: held out, never seen in training.
    val = generate_shapes(d.num_val, d.seed + 10_000, d.shapes_image_size, d.shapes_max_objects)
    return train, val, SHAPE_CLASSES


def iterate_batches(
    samples: list[ShapeSample],
    model: SSD,
    encoder: TargetEncoder,
    batch_size: int,
    rng: random.Random,
    channels_last: bool = False,
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Shuffled batches with random horizontal flips; the last partial batch is dropped."""
    order = list(range(len(samples)))
    rng.shuffle(order)
    for start in range(0, len(order) - batch_size + 1, batch_size):
        images, boxes, labels = [], [], []
        for i in order[start : start + batch_size]:
            s = samples[i]
            image, b = hflip(s.image, s.boxes) if rng.random() < 0.5 else (s.image, s.boxes)
            images.append(image)
            boxes.append(b)
            labels.append(s.labels)
        loc_targets, prior_labels = encode_batch(boxes, labels, [im.shape[:2] for im in images], encoder)
        yield to_model_input(images, model, channels_last), loc_targets, prior_labels


def print_now(line: str) -> None:
    """Progress lines reach a log file or ``ray job logs`` as they happen, not at exit."""
    print(line, flush=True)


def train_locally(cfg: ExperimentConfig, log: Callable[[str], None] = print_now) -> dict:
    """Train, evaluate, return ``{"epochs": [...], "val_mAP": float, "AP": {...}, "model": SSD}``."""
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    torch.manual_seed(cfg.train.seed)
    rng = random.Random(cfg.train.seed)
    t0 = time.perf_counter()
    train, val, class_names = load_samples(cfg)
    log(
        f"data: {len(train)} train / {len(val)} val images, classes {', '.join(class_names)} "
        f"({time.perf_counter() - t0:.1f}s)"
    )

    model = build_model(cfg.model, num_classes=len(class_names) + 1)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    encoder = TargetEncoder(model.priors, cfg.loss.iou_threshold, prior_spec=model.prior_spec)
    iters_per_epoch = len(train) // cfg.train.batch_size
    if iters_per_epoch == 0:
        raise ValueError(f"data.num_train={len(train)} is smaller than train.batch_size={cfg.train.batch_size}")
    optimizer = build_optimizer(model, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train, cfg.train.epochs * iters_per_epoch)
    log(
        f"model: {cfg.model.name}, {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{model.priors.shape[0]} priors, input {model.image_size}px; "
        f"{cfg.train.epochs} epochs x {iters_per_epoch} iters"
    )

    history, start = [], time.perf_counter()
    for epoch in range(1, cfg.train.epochs + 1):
        stats = train_one_epoch(
            model,
            iterate_batches(train, model, encoder, cfg.train.batch_size, rng),
            optimizer,
            scheduler,
            cfg.loss,
            cfg.train.grad_clip,
        )
        elapsed = time.perf_counter() - start
        eta = elapsed / epoch * (cfg.train.epochs - epoch)
        history.append(stats)
        log(
            f"epoch {epoch:3d}/{cfg.train.epochs}  loss {stats.loss:.3f} (loc {stats.loss_loc:.3f}, "
            f"cls {stats.loss_cls:.3f})  lr {stats.lr:.4f}  {stats.images_per_s:.0f} img/s  ETA {eta:.0f}s"
        )
        if cfg.train.time_limit_s is not None and elapsed > cfg.train.time_limit_s and epoch < cfg.train.epochs:
            log(f"time limit {cfg.train.time_limit_s:.0f}s reached after epoch {epoch}; stopping early")
            break

    metrics = evaluate(model, val, cfg.eval, cfg.train.channels_last)
    per_class = ", ".join(f"{class_names[k - 1]} {v:.3f}" for k, v in metrics["AP"].items())
    log(f"val VOC07 mAP@0.5 {metrics['mAP']:.3f} on {len(val)} held-out images ({per_class})")
    return {"epochs": history, "val_mAP": metrics["mAP"], "AP": metrics["AP"], "model": model}
