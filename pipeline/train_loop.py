"""The per-worker training loop: the same code on a Ray Train worker and in-process.

Where batches come from (:class:`Feed`) and how a worker talks to the others and to the
run's storage (:class:`Session`) are the only things that differ: Ray Data shards and Ray
Train's report/checkpoint on a cluster (:mod:`pipeline.ray_train`), memory and a local
folder in tests and benchmarks (:mod:`pipeline.local_train`).

Every rank trains and reports its metrics; rank 0 alone writes checkpoints and talks to
MLflow. Validation runs with each checkpoint (every ``train.checkpoint_every`` epochs and
at the end): every rank detects on its share, rank 0 computes the metrics from all shares.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from pipeline.builders import build_model, build_optimizer, build_scheduler
from pipeline.checkpoint import load_checkpoint, save_checkpoint
from pipeline.config import ExperimentConfig, to_dict
from pipeline.engine import EpochStats, detect_resized, train_one_epoch
from pipeline.results import record_results
from pipeline.tracking import Tracker
from ssd_core.convert import load_vgg16_imagenet
from ssd_core.metrics import evaluate_coco, evaluate_voc
from ssd_core.models.ssd import SSD

TrainBatch = tuple[Tensor, Tensor, Tensor]  # uint8 [B, S, S, 3], loc_targets [B, P, 4], labels [B, P]


class Feed(Protocol):
    """Batches for one worker."""

    def train_batches(self, epoch: int) -> Iterable[TrainBatch]:
        """This worker's share of one epoch (reshuffled, augmented for ``epoch``)."""
        ...

    def val_batches(self) -> Iterable[dict[str, Any]]:
        """This worker's share of the validation set: ``image`` uint8 ``[B, S, S, 3]``,
        ``height``, ``width`` ``[B]``, and per image ``boxes`` (flat xyxy pixels),
        ``labels``, ``difficult``, ``iscrowd``."""
        ...


class Session(Protocol):
    """One worker's view of the run."""

    rank: int
    world_size: int
    device: torch.device

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model as this worker trains it (DDP when there are several workers)."""
        ...

    def restored(self) -> contextlib.AbstractContextManager[Path | None]:
        """The checkpoint directory to resume from, or None for a fresh run."""
        ...

    def all_gather(self, value: Any) -> list[Any]:
        """``value`` from every rank, in rank order (a barrier)."""
        ...

    def report(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        """Report this rank's metrics, with rank 0's checkpoint directory when one was written."""
        ...


def validate(
    model: torch.nn.Module, feed: Feed, session: Session, cfg: ExperimentConfig, keep_samples: int = 0
) -> tuple[dict | None, list[tuple[np.ndarray, dict]]]:
    """Detect on this rank's share, gather every share on rank 0 and score them there.

    Returns rank 0's metrics (VOC07 mAP@0.5 with PR curves, plus COCO AP when
    ``eval.coco``; None on other ranks) and up to ``keep_samples`` of this rank's
    ``(resized image, detections in its pixels)`` pairs for the sample grid.
    """
    detections, truths, samples = [], [], []
    for batch in feed.val_batches():
        heights, widths = np.asarray(batch["height"]), np.asarray(batch["width"])
        images = torch.from_numpy(np.array(batch["image"]))  # a writable copy
        found = detect_resized(model, images, list(zip(heights.tolist(), widths.tolist())), cfg.eval,
                               cfg.train.channels_last, session.device)  # fmt: skip
        for i, det in enumerate(found):
            n = len(batch["labels"][i])
            truths.append({
                "boxes": np.asarray(batch["boxes"][i], np.float32).reshape(n, 4),
                "labels": np.asarray(batch["labels"][i], np.int64),
                # Crowd regions (COCO) count as VOC's "difficult": neither true nor false positives.
                "difficult": np.asarray(batch["difficult"][i], bool) | np.asarray(batch["iscrowd"][i], bool),
                "iscrowd": np.asarray(batch["iscrowd"][i], bool),
            })  # fmt: skip
            detections.append({k: v.numpy() for k, v in det.items()})
            if len(samples) < keep_samples:
                scale = np.array([images.shape[2] / widths[i], images.shape[1] / heights[i]] * 2, np.float32)
                samples.append((images[i].numpy(), {**detections[-1], "boxes": detections[-1]["boxes"] * scale}))
    gathered = session.all_gather((detections, truths))
    if session.rank != 0:
        return None, samples
    all_dets = [d for dets, _ in gathered for d in dets]
    all_truths = [t for _, ts in gathered for t in ts]
    metrics = evaluate_voc(all_dets, all_truths, iou_threshold=0.5, use_07_metric=True, curves=True)
    metrics["images"] = len(all_truths)
    if cfg.eval.coco:
        metrics["coco"] = evaluate_coco(all_dets, all_truths)
    return metrics, samples


def _epoch_metrics(per_rank: list[EpochStats]) -> dict[str, float]:
    """Losses averaged over ranks; images/s of the whole group (the slowest rank's time);
    the largest fraction of its epoch any rank spent waiting for data."""
    n = len(per_rank)
    images, seconds = sum(s.images for s in per_rank), max(s.seconds for s in per_rank)
    return {
        "loss": sum(s.loss for s in per_rank) / n,
        "loss_loc": sum(s.loss_loc for s in per_rank) / n,
        "loss_cls": sum(s.loss_cls for s in per_rank) / n,
        "lr": per_rank[0].lr,
        "images_per_s": images / max(seconds, 1e-9),
        "data_wait": max(s.data_wait_fraction for s in per_rank),
    }


def _val_scores(val: dict, class_names: tuple[str, ...]) -> dict[str, float]:
    scores = {"val/mAP": float(val["mAP"]), "val/images": float(val["images"])}
    scores.update({f"val/AP/{class_names[k - 1]}": float(v) for k, v in val["AP"].items()})
    if "coco" in val:
        scores.update({f"val/coco/{k}": float(v) for k, v in val["coco"].items()})
    return scores


def run_training(
    cfg: ExperimentConfig,
    class_names: tuple[str, ...],
    num_train: int,
    feed: Feed,
    session: Session,
    log: Callable[[str], None] = print,
) -> tuple[dict[str, Any], SSD]:
    """Train ``cfg`` on ``num_train`` images (all workers together); returns the last
    metrics reported (rank 0: with ``val/mAP``, ``mlflow_run_id``, ``model_uri``) and the
    trained model."""
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank
    rank, world = session.rank, session.world_size
    say = log if rank == 0 else (lambda _line: None)

    net = build_model(cfg.model, num_classes=len(class_names) + 1).to(session.device)
    if cfg.train.channels_last:
        net = net.to(memory_format=torch.channels_last)
    iters_per_epoch = num_train // world // cfg.train.batch_size
    if iters_per_epoch == 0:
        raise ValueError(f"{num_train} training images is fewer than train.batch_size={cfg.train.batch_size} "
                         f"x {world} workers")  # fmt: skip
    optimizer = build_optimizer(net, cfg.train, world)
    scheduler = build_scheduler(optimizer, cfg.train, cfg.train.epochs * iters_per_epoch)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.train.amp and session.device.type == "cuda")

    first_epoch, run_id, done = 1, None, {}
    with session.restored() as found:
        if found is not None:
            meta = load_checkpoint(found, net, optimizer, scheduler, scaler)
            first_epoch, run_id = meta["epoch"] + 1, meta["mlflow_run_id"]
            done = {"epoch": meta["epoch"], **meta["metrics"]}
            say(f"resumed from checkpoint {found.name} (epoch {meta['epoch']} done)")
        elif cfg.model.backbone_weights:
            load_vgg16_imagenet(net, cfg.model.backbone_weights)
            say(f"backbone initialised from {cfg.model.backbone_weights}")
    if first_epoch > cfg.train.epochs:
        # Finished before (a sweep or job restarted after its last checkpoint): report the
        # final metrics again, model URI included, rather than nothing.
        say(f"run already finished at epoch {first_epoch - 1}: reporting its final metrics")
        session.report(done, None)
        return done, net
    model = session.wrap(net)
    say(f"model: {cfg.model.name}, {sum(p.numel() for p in net.parameters()):,} parameters, "
        f"{net.priors.shape[0]} priors, input {net.image_size}px; {world} worker(s) on {session.device.type}, "
        f"{cfg.train.epochs} epochs x {iters_per_epoch} iters of {cfg.train.batch_size * world} images, "
        f"augmentation {cfg.data.augment}")  # fmt: skip

    tracker = Tracker(cfg.tracking, cfg.name, log) if rank == 0 else None
    if tracker is not None:
        tracker.start(cfg, run_id=run_id)
        if first_epoch > 1:
            tracker.log_metrics({"resumed_from_epoch": first_epoch - 1}, step=first_epoch - 1)

    start, last = time.perf_counter(), {}
    for epoch in range(first_epoch, cfg.train.epochs + 1):
        stats = train_one_epoch(model, feed.train_batches(epoch), optimizer, scheduler, cfg.loss, cfg.train,
                                session.device, scaler)  # fmt: skip
        metrics: dict[str, Any] = {"epoch": epoch, **_epoch_metrics(session.all_gather(stats))}
        elapsed = time.perf_counter() - start
        stopping = cfg.train.time_limit_s is not None and elapsed > cfg.train.time_limit_s
        final = epoch == cfg.train.epochs or stopping
        eta = elapsed / (epoch - first_epoch + 1) * (cfg.train.epochs - epoch)
        say(f"epoch {epoch:3d}/{cfg.train.epochs}  loss {metrics['loss']:.3f} (loc {metrics['loss_loc']:.3f}, "
            f"cls {metrics['loss_cls']:.3f})  lr {metrics['lr']:.4f}  {metrics['images_per_s']:.0f} img/s  "
            f"data wait {100 * metrics['data_wait']:.0f}%  ETA {eta:.0f}s")  # fmt: skip
        if tracker is not None:
            tracker.log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step=epoch)

        checkpoint_dir = None
        with tempfile.TemporaryDirectory() as tmp:
            if epoch % cfg.train.checkpoint_every == 0 or final:
                val, samples = validate(model, feed, session, cfg, cfg.eval.sample_images if final else 0)
                metrics.update(session.all_gather(_val_scores(val, class_names) if val else None)[0])
                say(f"epoch {epoch:3d}: val VOC07 mAP@0.5 {metrics['val/mAP']:.3f} on {val['images'] if val else '?'} "
                    "images")  # fmt: skip
                if rank == 0:
                    if final:  # the model registered first: its URI goes into the checkpoint
                        metrics.update(record_results(tracker, net, cfg, class_names, val, samples, epoch, say))
                    else:
                        tracker.log_metrics(_val_scores(val, class_names), step=epoch)
                    checkpoint_dir = save_checkpoint(
                        tmp, net, optimizer, scheduler, epoch, to_dict(cfg), tracker.run_id,
                        {k: v for k, v in metrics.items() if isinstance(v, (float, str))}, class_names, scaler,
                    )  # fmt: skip
            session.report(metrics, checkpoint_dir)
        last = metrics
        if stopping and epoch < cfg.train.epochs:
            say(f"time limit {cfg.train.time_limit_s:.0f}s reached after epoch {epoch}; stopping early")
            break
    return last, net

