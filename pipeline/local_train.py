"""Train and evaluate in this process, through the same data layer users' data takes.

The generated shapes set is written as JPEG + COCO JSON and converted to Parquet shards
(once; later runs reuse them), read back, decoded, augmented per (seed, epoch, index),
encoded, and trained on with the paper's loss and SGD schedule; one line per epoch
(loss, images/s, ETA), then the held-out VOC mAP. Tracked in MLflow (params, per-epoch
metrics, config, AP table, PR curves, the registered model). No Ray yet: the Ray Train
worker loop reuses :mod:`pipeline.engine`, :mod:`pipeline.samples` and
:mod:`pipeline.tracking` unchanged.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import Tensor

from pipeline.builders import build_model, build_optimizer, build_scheduler
from pipeline.checkpoint import latest_checkpoint, load_checkpoint, prune_checkpoints, save_checkpoint
from pipeline.config import ExperimentConfig, to_dict
from pipeline.engine import evaluate, train_one_epoch
from pipeline.prepare import PrepareRequest, prepare_shards
from pipeline.samples import augment_sample, decode, encode_batch, to_model_input
from pipeline.tracking import Tracker
from ssd_core.data.record import DataError, DetectionRecord
from ssd_core.data.shards import read_manifest, read_shards
from ssd_core.matching import TargetEncoder
from ssd_core.metrics import ap_table, write_pr_curves
from ssd_core.models.ssd import SSD

Decoded = tuple[np.ndarray, np.ndarray, np.ndarray]  # image [H, W, 3] uint8, boxes px [N, 4], labels [N]


def print_now(line: str) -> None:
    """Progress lines reach a log file or ``ray job logs`` as they happen, not at exit."""
    print(line, flush=True)


def load_records(
    cfg: ExperimentConfig, log: Callable[[str], None]
) -> tuple[list[DetectionRecord], list[DetectionRecord], tuple[str, ...]]:
    """Train and val records (with image bytes) and the class names, preparing the
    shapes shards first when the source is ``shapes``."""
    d = cfg.data
    if d.source == "shapes":
        request = PrepareRequest(
            "shapes", d.root, d.shards, shapes_train=d.num_train, shapes_val=d.num_val,
            shapes_seed=d.seed, shapes_image_size=d.shapes_image_size,
        )  # fmt: skip
        prepare_shards(request, log=log)
    elif d.source != "shards":
        raise DataError(f"data.source {d.source!r}: use 'shapes' or 'shards' (prepared by jobs/prepare_data.py)")
    class_names = tuple(read_manifest(d.shards)["class_names"])
    return list(read_shards(d.shards, "train")), list(read_shards(d.shards, "val")), class_names


def decode_all(records: Sequence[DetectionRecord], with_crowd: bool = False) -> list[Decoded]:
    """Decode every image once (the set fits in memory here); crowd regions left out of
    training targets unless ``with_crowd``."""
    out = []
    for r in records:
        boxes, labels = (r.boxes, r.labels) if with_crowd else r.training_targets()
        out.append((decode(r), boxes, labels))
    return out


def iterate_batches(
    samples: Sequence[Decoded], model: SSD, encoder: TargetEncoder, cfg: ExperimentConfig, epoch: int
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """One epoch: a reshuffle and a fresh augmentation draw, both fixed by (seed, epoch);
    the last partial batch is dropped."""
    order = np.random.default_rng((cfg.train.seed, epoch)).permutation(len(samples))
    size, batch_size = model.image_size, cfg.train.batch_size
    for start in range(0, len(order) - batch_size + 1, batch_size):
        drawn = [
            augment_sample(cfg.data.augment, *samples[i], size, cfg.train.seed, epoch, int(i))
            for i in order[start : start + batch_size]
        ]
        loc_targets, labels = encode_batch([d[1] for d in drawn], [d[2] for d in drawn], encoder)
        yield to_model_input([d[0] for d in drawn], model, cfg.train.channels_last), loc_targets, labels


def train_locally(cfg: ExperimentConfig, log: Callable[[str], None] = print_now) -> dict:
    """Train, evaluate, return ``{"epochs": [...], "val_mAP": float, "AP": {...}, "model": SSD}``."""
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    torch.manual_seed(cfg.train.seed)
    t0 = time.perf_counter()
    train_records, val_records, class_names = load_records(cfg, log)
    train, val = decode_all(train_records), decode_all(val_records, with_crowd=True)
    log(f"data: {len(train)} train / {len(val)} val images, classes {', '.join(class_names)} "
        f"({time.perf_counter() - t0:.1f}s)")  # fmt: skip

    model = build_model(cfg.model, num_classes=len(class_names) + 1)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    encoder = TargetEncoder(model.priors, cfg.loss.iou_threshold, prior_spec=model.prior_spec)
    iters_per_epoch = len(train) // cfg.train.batch_size
    if iters_per_epoch == 0:
        raise ValueError(f"{len(train)} training images is fewer than train.batch_size={cfg.train.batch_size}")
    optimizer = build_optimizer(model, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train, cfg.train.epochs * iters_per_epoch)
    log(
        f"model: {cfg.model.name}, {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{model.priors.shape[0]} priors, input {model.image_size}px; "
        f"{cfg.train.epochs} epochs x {iters_per_epoch} iters, augmentation {cfg.data.augment}"
    )

    run_dir = Path(cfg.train.checkpoint_dir) / (cfg.train.run_name or cfg.name)
    first_epoch, run_id = 1, None
    found = latest_checkpoint(run_dir) if cfg.train.resume else None
    if found is not None:
        meta = load_checkpoint(found, model, optimizer, scheduler)
        first_epoch, run_id = meta["epoch"] + 1, meta["mlflow_run_id"]
        log(f"resumed from {found} (epoch {meta['epoch']} done)")
    tracker = Tracker(cfg.tracking, cfg.name, log)
    tracker.start(cfg, run_id=run_id)

    history, start = [], time.perf_counter()
    for epoch in range(first_epoch, cfg.train.epochs + 1):
        stats = train_one_epoch(
            model, iterate_batches(train, model, encoder, cfg, epoch), optimizer, scheduler, cfg.loss,
            cfg.train.grad_clip,
        )  # fmt: skip
        elapsed = time.perf_counter() - start
        eta = elapsed / (epoch - first_epoch + 1) * (cfg.train.epochs - epoch)
        history.append(stats)
        tracker.log_metrics(
            {"loss": stats.loss, "loss_loc": stats.loss_loc, "loss_cls": stats.loss_cls, "lr": stats.lr,
             "images_per_s": stats.images_per_s}, step=epoch,
        )  # fmt: skip
        log(
            f"epoch {epoch:3d}/{cfg.train.epochs}  loss {stats.loss:.3f} (loc {stats.loss_loc:.3f}, "
            f"cls {stats.loss_cls:.3f})  lr {stats.lr:.4f}  {stats.images_per_s:.0f} img/s  ETA {eta:.0f}s"
        )
        stopping = cfg.train.time_limit_s is not None and elapsed > cfg.train.time_limit_s
        if epoch % cfg.train.checkpoint_every == 0 or epoch == cfg.train.epochs or stopping:
            save_checkpoint(run_dir, model, optimizer, scheduler, epoch, to_dict(cfg), tracker.run_id,
                            {"loss": stats.loss}, class_names)  # fmt: skip
            prune_checkpoints(run_dir, cfg.train.keep_checkpoints)
        if stopping and epoch < cfg.train.epochs:
            log(f"time limit {cfg.train.time_limit_s:.0f}s reached after epoch {epoch}; stopping early")
            break

    images = [v[0] for v in val]
    # Crowd regions (COCO) count as VOC's "difficult": neither true nor false positives.
    truths = [{"boxes": r.boxes, "labels": r.labels, "difficult": r.difficult | r.iscrowd} for r in val_records]
    metrics = evaluate(model, images, truths, cfg.eval, cfg.train.channels_last)
    per_class = ", ".join(f"{class_names[k - 1]} {v:.3f}" for k, v in metrics["AP"].items())
    log(f"val VOC07 mAP@0.5 {metrics['mAP']:.3f} on {len(val)} held-out images ({per_class})")
    model_uri = record_results(tracker, model, cfg, class_names, metrics, first_epoch - 1 + len(history))
    return {"epochs": history, "val_mAP": metrics["mAP"], "AP": metrics["AP"], "model": model,
            "run_id": tracker.run_id, "model_uri": model_uri}  # fmt: skip


def record_results(
    tracker: Tracker, model: SSD, cfg: ExperimentConfig, class_names: tuple[str, ...], metrics: dict, step: int
) -> str | None:
    """Log the evaluation and the model, register it, close the run; the model URI."""
    scores = {"val/mAP": metrics["mAP"]}
    scores.update({f"val/AP/{class_names[k - 1]}": v for k, v in metrics["AP"].items()})
    tracker.log_metrics(scores, step=step)
    tracker.log_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), "config.yaml")
    tracker.log_text(ap_table(metrics["AP"], class_names, metrics["mAP"]), "val_ap.md")
    with tempfile.TemporaryDirectory() as tmp:
        write_pr_curves(metrics["curves"], metrics["AP"], class_names, Path(tmp))
        tracker.log_artifacts(tmp, "pr_curves")
    model_uri = tracker.log_model(model, cfg, class_names)
    tracker.end()
    return model_uri
