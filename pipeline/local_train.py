"""The training loop in this process: memory for Ray Data, a folder for Ray Train.

:func:`train_locally` runs :func:`pipeline.train_loop.run_training`, the loop every Ray
Train worker runs, with an in-memory :class:`MemoryFeed` (the same decode, augmentation
and encoding functions as the Ray Data transforms, the same draw per image and epoch) and
a one-worker :class:`LocalSession` that keeps checkpoints in
``{train.checkpoint_dir}/{train.run_name}``. The tests and the benchmarks use it as the
plain single-process reference; users train through :mod:`pipeline.ray_train`.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.builders import build_model
from pipeline.checkpoint import latest_checkpoint, prune_checkpoints
from pipeline.config import ExperimentConfig
from pipeline.prepare import PrepareRequest, prepare_shards
from pipeline.samples import augment_sample, decode, encode_batch, image_index
from pipeline.train_loop import TrainBatch, run_training
from ssd_core.augment import resize_for_eval
from ssd_core.data.record import DataError, DetectionRecord
from ssd_core.data.shards import read_manifest, read_shards
from ssd_core.matching import TargetEncoder


def print_now(line: str) -> None:
    """Progress lines reach a log file or ``ray job logs`` as they happen, not at exit."""
    print(line, flush=True)


def prepare_data(cfg: ExperimentConfig, log: Callable[[str], None] = print_now) -> tuple[str, ...]:
    """Make sure the shards exist (generating the shapes set on first use when the
    source is ``shapes``); the class names."""
    d = cfg.data
    if d.source == "shapes":
        request = PrepareRequest(
            "shapes", d.root, d.shards, shapes_train=d.num_train, shapes_val=d.num_val,
            shapes_seed=d.seed, shapes_image_size=d.shapes_image_size,
        )  # fmt: skip
        prepare_shards(request, log=log)
    elif d.source != "shards":
        raise DataError(f"data.source {d.source!r}: use 'shapes' or 'shards' (prepared by jobs/prepare_data.py)")
    return tuple(read_manifest(d.shards)["class_names"])


class MemoryFeed:
    """Every image decoded once and kept in memory; an epoch is a permutation fixed by
    (seed, epoch), augmented per (seed, epoch, image id) as the Ray Data transform does."""

    def __init__(self, cfg: ExperimentConfig, class_names: Sequence[str]) -> None:
        self.cfg = cfg
        model = build_model(cfg.model, num_classes=len(class_names) + 1)
        self.size = model.image_size
        self.encoder = TargetEncoder(model.priors, cfg.loss.iou_threshold, prior_spec=model.prior_spec)
        self.train = [(r.image_id, decode(r), *r.training_targets()) for r in read_shards(cfg.data.shards, "train")]
        self.val: list[DetectionRecord] = list(read_shards(cfg.data.shards, "val"))

    def train_batches(self, epoch: int) -> Iterator[TrainBatch]:
        c, batch_size = self.cfg, self.cfg.train.batch_size
        order = np.random.default_rng((c.train.seed, epoch)).permutation(len(self.train))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            drawn = [
                augment_sample(c.data.augment, image, boxes, labels, self.size, c.train.seed, epoch, image_index(iid))
                for iid, image, boxes, labels in (self.train[i] for i in order[start : start + batch_size])
            ]
            loc_targets, labels = encode_batch([d[1] for d in drawn], [d[2] for d in drawn], self.encoder)
            yield torch.from_numpy(np.stack([d[0] for d in drawn])), loc_targets, labels

    def val_batches(self) -> Iterator[dict[str, Any]]:
        step = self.cfg.eval.batch_size
        for start in range(0, len(self.val), step):
            chunk = self.val[start : start + step]
            yield {
                "image": np.stack([resize_for_eval(decode(r), self.size) for r in chunk]),
                "height": np.array([r.height for r in chunk]),
                "width": np.array([r.width for r in chunk]),
                "boxes": [r.boxes.reshape(-1) for r in chunk],
                "labels": [r.labels for r in chunk],
                "difficult": [r.difficult for r in chunk],
                "iscrowd": [r.iscrowd for r in chunk],
            }


class LocalSession:
    """One worker, no peers; checkpoints in ``folder`` (the latest ``keep`` kept)."""

    rank, world_size = 0, 1

    def __init__(self, folder: str | Path, keep: int, resume: bool = True, device: str = "cpu") -> None:
        self.folder, self.keep, self.resume = Path(folder), keep, resume
        self.device = torch.device(device)
        self.reports: list[dict[str, Any]] = []

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    @contextlib.contextmanager
    def restored(self) -> Iterator[Path | None]:
        yield latest_checkpoint(self.folder) if self.resume else None

    def all_gather(self, value: Any) -> list[Any]:
        return [value]

    def report(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        self.reports.append(dict(metrics))
        if checkpoint is not None:
            target = self.folder / checkpoint.name
            shutil.rmtree(target, ignore_errors=True)
            self.folder.mkdir(parents=True, exist_ok=True)
            shutil.copytree(checkpoint, target)
            prune_checkpoints(self.folder, self.keep)


def train_locally(cfg: ExperimentConfig, log: Callable[[str], None] = print_now) -> dict[str, Any]:
    """Train and evaluate in this process; the last metrics (``val/mAP``, ``model_uri``,
    ``mlflow_run_id``, ...) plus ``"reports"`` (every epoch's metrics) and ``"model"``."""
    class_names = prepare_data(cfg, log)
    feed = MemoryFeed(cfg, class_names)
    log(f"data: {len(feed.train)} train / {len(feed.val)} val images, classes {', '.join(class_names)}")
    session = LocalSession(Path(cfg.train.checkpoint_dir) / (cfg.train.run_name or cfg.name),
                           cfg.train.keep_checkpoints, cfg.train.resume)  # fmt: skip
    last, model = run_training(cfg, class_names, len(feed.train), feed, session, log)
    return {**last, "reports": session.reports, "model": model}
