"""Ray Data: Parquet shards -> decoded, augmented, anchor-encoded batches on CPU workers.

Training rows go through :class:`TrainTransform` in tasks that each read one shard and
transform it (read fused with ``map_batches``), ``data.workers`` at a time (the target
encoder and the priors are built once per worker process, for the first epoch ahead of
time by :func:`warm_up_train_transform`), and stream to the train
workers as ``image`` uint8 ``[B, S, S, 3]``, ``loc_targets`` float32 ``[B, P, 4]`` and
``labels`` int64 ``[B, P]``: images travel as uint8, four times less than float, and are
normalised where they train.

Each epoch draws a fresh augmentation, reproducible per image from ``(seed, epoch,
image_id)``: the epoch comes from :class:`EpochClock`, a tiny actor every train worker
sets before it starts an epoch's iteration (Ray Data runs a dataset again for each
iteration, so the transform reads the clock as the epoch's blocks are made). The order is
reshuffled every epoch: the shard files are read in a fresh order (seeded by the seed and
the dataset's execution count) and each train worker's local shuffle buffer is seeded by
(seed, epoch, rank); which blocks reach which worker is up to Ray Data's streaming split.

Validation rows are only decoded and resized, and hash-partitioned by image id into one
dataset per train worker, so every image is evaluated exactly once (Ray Train's split
would drop rows to make the shares equal).
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Iterator, Sequence
from typing import Any

import cv2
import numpy as np
import ray
import ray.data
from ray.data import FileShuffleConfig

from pipeline.builders import build_model
from pipeline.config import ExperimentConfig, from_dict, to_dict
from pipeline.samples import augment_sample, decode, encode_batch, image_index
from ssd_core.augment import resize_for_eval
from ssd_core.data.shards import row_to_record, shard_paths
from ssd_core.matching import TargetEncoder


@ray.remote(num_cpus=0)
class EpochClock:
    """The epoch the train transform draws augmentations for."""

    def __init__(self) -> None:
        self.epoch = 0

    def set(self, epoch: int) -> int:
        self.epoch = epoch
        return epoch

    def get(self) -> int:
        return self.epoch


def fit_opencv_to_task(cpus: float) -> None:
    """OpenCV in this process on as many threads as the task holds CPUs (at least one).

    Ray gives torch a task's CPUs (``OMP_NUM_THREADS``) but not OpenCV, whose pool spans
    every core, and its threads busy-wait after each call. Parallelism here comes from
    ``data.workers`` tasks instead, one image at a time each: on 2 cores, beside a
    training worker, the data task took 33% of a core with OpenCV's default threads and
    16% with one, for the same images/s (measured with the SSD augmentation).
    """
    cv2.setNumThreads(max(1, int(cpus)))


def _rows(batch: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    return [{k: batch[k][i] for k in batch} for i in range(len(batch["image_id"]))]


class TrainTransform:
    """Shard rows -> training samples."""

    def __init__(self, config: dict, class_names: Sequence[str]) -> None:
        self.cfg: ExperimentConfig = from_dict(config)
        fit_opencv_to_task(self.cfg.data.cpus_per_worker)
        self.class_names = tuple(class_names)
        model = build_model(self.cfg.model, num_classes=len(self.class_names) + 1)
        self.size = model.image_size
        self.encoder = TargetEncoder(model.priors, self.cfg.loss.iou_threshold, prior_spec=model.prior_spec)

    def __call__(self, batch: dict[str, np.ndarray], epoch: int) -> dict[str, np.ndarray]:
        images, boxes, labels = [], [], []
        for row in _rows(batch):
            record = row_to_record(row, self.class_names)
            image, b, lab = augment_sample(
                self.cfg.data.augment, decode(record), *record.training_targets(), self.size,
                self.cfg.train.seed, epoch, image_index(record.image_id),
            )  # fmt: skip
            images.append(image)
            boxes.append(b)
            labels.append(lab)
        loc_targets, prior_labels = encode_batch(boxes, labels, self.encoder)
        return {"image": np.stack(images), "loc_targets": loc_targets.numpy(), "labels": prior_labels.numpy()}


class ValTransform:
    """Shard rows -> resized uint8 images plus what evaluation needs (original size and
    the ground truth, passed through)."""

    def __init__(self, config: dict, class_names: Sequence[str]) -> None:
        cfg = from_dict(config)
        fit_opencv_to_task(cfg.data.cpus_per_worker)
        self.size = build_model(cfg.model, num_classes=len(class_names) + 1).image_size
        self.class_names = tuple(class_names)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        images = [resize_for_eval(decode(row_to_record(r, self.class_names)), self.size) for r in _rows(batch)]
        out = {k: batch[k] for k in ("image_id", "width", "height", "boxes", "labels", "difficult", "iscrowd")}
        out["image"] = np.stack(images)
        return out


@functools.lru_cache(maxsize=4)
def _transform(kind: type, config_json: str, class_names: tuple[str, ...]) -> Any:
    # Map tasks run in Ray's pooled worker processes, which outlive one dataset execution:
    # the transform (priors, encoder) is built once per process and config, not per epoch
    # (an actor pool would be started again, ~7 s, every time an epoch's iteration begins).
    return kind(json.loads(config_json), class_names)


def _train_batches(batch: dict[str, np.ndarray], config_json: str, class_names: tuple[str, ...], clock: Any,
                   chunk: int) -> Iterator[dict]:  # fmt: skip
    """A whole read block in, training samples out ``chunk`` images at a time: the map
    takes whole blocks so that Ray fuses it with the read (one task per shard, read and
    transformed where it runs), and it yields so that its output still streams out in
    blocks while the rest of the shard is worked on."""
    transform = _transform(TrainTransform, config_json, class_names)
    epoch = ray.get(clock.get.remote())
    for start in range(0, len(batch["image_id"]), chunk):
        yield transform({k: v[start : start + chunk] for k, v in batch.items()}, epoch)


def _val_batch(batch: dict[str, np.ndarray], config_json: str, class_names: tuple[str, ...]) -> dict:
    return _transform(ValTransform, config_json, class_names)(batch)


def _keep_partition(batch: dict[str, np.ndarray], part: int, parts: int) -> dict[str, np.ndarray]:
    keep = np.array([image_index(str(i)) % parts == part for i in batch["image_id"]], dtype=bool)
    return {k: v[keep] for k, v in batch.items()}


@contextlib.contextmanager
def _read_settings(**fields: Any) -> Iterator[None]:
    """The current DataContext with ``fields`` set while a dataset is created: the dataset
    keeps a copy, so its settings stay with it and nothing else sees them."""
    context = ray.data.DataContext.get_current()
    before = {k: getattr(context, k) for k in fields}
    for k, v in fields.items():
        setattr(context, k, v)
    try:
        yield
    finally:
        for k, v in before.items():
            setattr(context, k, v)


def _read(cfg: ExperimentConfig, split: str, shuffle_files: bool = False) -> ray.data.Dataset:
    paths = shard_paths(cfg.data.shards, split)
    shuffle = FileShuffleConfig(seed=cfg.train.seed, reseed_after_execution=True) if shuffle_files else None
    # One read task per shard, fused with the map (a task reads its shard and transforms it
    # where it runs): shards hold equal image counts, so the tasks are equal and an epoch's
    # tail (workers idle while the last tasks run) is at most one shard's work. Grouping
    # shards unevenly cost a quarter (6 shards in 4 tasks of 2,2,1,1 shards: one worker
    # busy twice as long). With fewer than two shards per worker, Ray splits them into
    # that many pieces, and each piece is its own map task.
    blocks = max(len(paths), 2 * cfg.data.workers)
    # Ray 2.60's Parquet reader (DataSourceV2) bin-packs files into 128 MiB read units and
    # ignores override_num_blocks: a set under 128 MiB became one block, one map task, one
    # busy data worker whatever data.workers said (measured: 6 shards -> 1 task). The V1
    # reader honours the block count.
    # Blocks of 16 MiB, not 128: a train worker gets an epoch's first batch after one
    # output block (~190 light-model samples), not after a whole task.
    # Local paths must be visible to every node: on a cluster, use a bucket.
    with _read_settings(use_datasource_v2=False, target_max_block_size=16 * 2**20):
        # The read asks for what the map asks for (concurrency, CPUs), so that Ray fuses
        # them; a split read is not fused, and it runs one task per shard.
        return ray.data.read_parquet(
            paths, override_num_blocks=blocks, shuffle=shuffle,
            concurrency=min(cfg.data.workers, len(paths)), num_cpus=cfg.data.cpus_per_worker,
        )  # fmt: skip


def transform_key(cfg: ExperimentConfig, class_names: Sequence[str]) -> dict[str, Any]:
    """What a worker process builds and caches a transform by (config and class names)."""
    return {"config_json": json.dumps(to_dict(cfg)), "class_names": tuple(class_names)}


@ray.remote
def _build_train_transform(config_json: str, class_names: tuple[str, ...]) -> None:
    _transform(TrainTransform, config_json, class_names)


def warm_up_train_transform(cfg: ExperimentConfig, class_names: Sequence[str]) -> list[ray.ObjectRef]:
    """Start ``data.workers`` data worker processes and build the train transform in them
    now, while the train worker builds its model and Ray Data its split, rather than when
    the first epoch asks for its first batch: on 2 cores that cold start (a worker
    process, its imports, the priors and the encoder) kept the train worker waiting ~13 s
    of the demo's first epoch. Ray reuses an idle worker process only for tasks of the
    same runtime environment, so call it where the epoch's tasks are submitted from
    within (a Ray Train worker, not the driver). Nothing waits for the returned refs; a
    failure here shows again in the real tasks."""
    # Scheduled as Ray Data schedules its map tasks: without a strategy of its own, a task
    # from a train worker would be held to that worker's placement group.
    build = _build_train_transform.options(
        num_cpus=cfg.data.cpus_per_worker, scheduling_strategy=ray.data.DataContext.get_current().scheduling_strategy
    )
    return [build.remote(**transform_key(cfg, class_names)) for _ in range(cfg.data.workers)]


def train_dataset(cfg: ExperimentConfig, class_names: Sequence[str], clock: Any) -> ray.data.Dataset:
    """The training stream; ``clock`` is an :class:`EpochClock` handle."""
    d = cfg.data
    return _read(cfg, "train", shuffle_files=True).map_batches(
        _train_batches,
        fn_kwargs={**transform_key(cfg, class_names), "clock": clock, "chunk": d.map_batch_size},
        batch_size=None,  # whole blocks: see _train_batches
        compute=ray.data.TaskPoolStrategy(size=d.workers),
        num_cpus=d.cpus_per_worker,
        batch_format="numpy",
    )


def val_datasets(cfg: ExperimentConfig, class_names: Sequence[str], parts: int) -> dict[str, ray.data.Dataset]:
    """``{"val_0": ..., "val_{parts-1}": ...}``: disjoint validation shares, one per worker."""
    d, base = cfg.data, _read(cfg, "val")
    out = {}
    for part in range(parts):
        share = base if parts == 1 else base.map_batches(_keep_partition, fn_kwargs={"part": part, "parts": parts})
        out[f"val_{part}"] = share.map_batches(
            _val_batch,
            fn_kwargs=transform_key(cfg, class_names),
            batch_size=d.map_batch_size,
            compute=ray.data.TaskPoolStrategy(size=d.workers),
            num_cpus=d.cpus_per_worker,
            batch_format="numpy",
        )
    return out
