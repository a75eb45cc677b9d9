"""Ray Data and Ray Train against their plain-PyTorch peers, on this machine.

    python -m benchmarks.pipeline [--quick]

1. Preprocessing: the training transform (Parquet shard rows -> decode -> augmentation ->
   SSD target encoding) through Ray Data ``map_batches`` vs the same transform in a
   ``torch.utils.data.DataLoader`` with the same number of worker processes, three epochs
   of the generated shapes set each, after a warm-up epoch. Target: >= 0.95x images/s.
2. Training: one Ray Train worker (Ray Data feeding it) vs a plain single-process loop
   doing the same per-epoch work inline (read shards, decode, augment, encode, train),
   images/s of the last of three epochs, over ``--rounds`` runs of each.
   Target: at most 10% slower (>= 0.90x).
3. Training alone: the same loop on one epoch of batches made before the timing starts
   and replayed, in a Ray Train worker and in a plain process: what Ray Train itself
   costs, with nothing preprocessed beside it (no target; it says where 2. loses).

Ours and the peer take turns (epoch by epoch, run by run): the machine these run on is
a shared VM whose speed drifts by 10-25% within minutes, and taking turns puts the drift
on both sides alike instead of on whichever ran second.

Each line prints ours (Ray), the peer's figure from the same run, and the ratio last
(our images/s over the peer's: higher is better for us).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import pyarrow.parquet as pq
import ray
import ray.train
import ray.train.torch
import torch

from pipeline.config import ExperimentConfig, from_dict, load_config, to_dict
from pipeline.host_memory import keep_freed_memory_here
from pipeline.local_train import LocalSession, prepare_data
from pipeline.ray_data import EpochClock, TrainTransform, train_dataset
from pipeline.ray_runtime import connect
from pipeline.ray_train import RaySession, scaling_config, train_on_ray
from pipeline.train_loop import Feed, TrainBatch, run_training
from ssd_core.data.shards import shard_paths


class ShardStream(torch.utils.data.IterableDataset):
    """The DataLoader peer: each worker reads its share of the shard files and runs the
    same transform on ``map_batch_size`` rows at a time."""

    def __init__(self, cfg: ExperimentConfig, class_names: tuple[str, ...], epoch: int) -> None:
        self.cfg, self.class_names, self.epoch = cfg, class_names, epoch

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        transform = TrainTransform(to_dict(self.cfg), self.class_names)
        for path in shard_paths(self.cfg.data.shards, "train")[worker::workers]:
            table = pq.read_table(path)
            for start in range(0, table.num_rows, self.cfg.data.map_batch_size):
                rows = table.slice(start, self.cfg.data.map_batch_size)
                batch = {c: rows.column(c).to_numpy(zero_copy_only=False) for c in rows.column_names}
                yield {k: torch.from_numpy(v) for k, v in transform(batch, self.epoch).items()}


class InlineFeed:
    """The plain loop's feed: the same per-epoch work as the Ray Data pipeline, inline."""

    def __init__(self, cfg: ExperimentConfig, class_names: tuple[str, ...]) -> None:
        self.cfg, self.class_names = cfg, class_names

    def train_batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        size = self.cfg.train.batch_size
        for chunk in ShardStream(self.cfg, self.class_names, epoch):
            for start in range(0, chunk["image"].shape[0] - size + 1, size):
                yield tuple(chunk[k][start : start + size] for k in ("image", "loc_targets", "labels"))

    def val_batches(self) -> Iterator[dict]:
        return iter(())


class HeldFeed:
    """One epoch of the inline feed's batches, made once before training and replayed
    every epoch: training with nothing preprocessed while it runs."""

    def __init__(self, cfg: ExperimentConfig, class_names: tuple[str, ...]) -> None:
        self.batches = list(InlineFeed(cfg, class_names).train_batches(1))

    def train_batches(self, epoch: int) -> Iterator[TrainBatch]:
        return iter(self.batches)

    def val_batches(self) -> Iterator[dict]:
        return iter(())


# Epochs timed after a first one that starts the worker processes: ~2 s each on 2 CPUs,
# so one alone varies by +-5% from run to run.
TIMED_EPOCHS = (2, 3, 4)


def interleaved_images_per_s(feeds: Sequence[Callable[[int], Iterable[dict]]]) -> list[float]:
    """Images/s of each feed over ``TIMED_EPOCHS``, after an untimed first epoch of each;
    the feeds take turns epoch by epoch. ``feed(e)`` sets up epoch ``e`` and returns its
    batches (dicts with ``image`` [B, ...])."""
    counts, seconds = [0] * len(feeds), [0.0] * len(feeds)
    for epoch in (1, *TIMED_EPOCHS):
        for i, feed in enumerate(feeds):
            batches = feed(epoch)
            start, count = time.perf_counter(), 0
            for batch in batches:
                count += batch["image"].shape[0]
            if epoch in TIMED_EPOCHS:
                counts[i], seconds[i] = counts[i] + count, seconds[i] + time.perf_counter() - start
    return [n / s for n, s in zip(counts, seconds)]


def ray_data_feed(cfg: ExperimentConfig, names: tuple[str, ...]) -> Callable[[int], Iterable[dict]]:
    clock = EpochClock.remote()
    ds = train_dataset(cfg, names, clock)

    def epoch_batches(epoch: int) -> Iterable[dict]:
        ray.get(clock.set.remote(epoch))
        return ds.iter_torch_batches(batch_size=cfg.train.batch_size)

    return epoch_batches


def dataloader_feed(cfg: ExperimentConfig, names: tuple[str, ...]) -> Callable[[int], Iterable[dict]]:
    return lambda epoch: torch.utils.data.DataLoader(
        ShardStream(cfg, names, epoch), batch_size=None, num_workers=cfg.data.workers)  # fmt: skip


def ray_train_epoch(cfg: ExperimentConfig, run_name: str) -> tuple[float, float]:
    """(images/s, data-wait fraction) of the last epoch of Ray Train workers fed by Ray
    Data, on a Ray started for this run and stopped after it."""
    started = connect(num_cpus=None, include_dashboard=False, log_to_driver=False)
    try:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, run_name=run_name, resume=False))
        metrics = train_on_ray(cfg, log=lambda line: None).metrics
        return metrics["images_per_s"], metrics["data_wait"]
    finally:
        if started:
            ray.shutdown()  # the plain loop gets the machine to itself


def plain_epoch(
    cfg: ExperimentConfig, names: tuple[str, ...], count: int, folder: Path, feed: Feed | None = None
) -> tuple[float, float]:
    """(images/s, data-wait fraction) of the last epoch of the plain single-process loop
    over ``count`` training images, fed by ``feed`` (default: an :class:`InlineFeed`)."""
    session = LocalSession(folder, keep=1, resume=False)
    run_training(cfg, names, count, feed or InlineFeed(cfg, names), session, lambda line: None)
    return session.reports[-1]["images_per_s"], session.reports[-1]["data_wait"]


def _held_worker(config: dict) -> None:
    cfg, names = from_dict(config["experiment"]), tuple(config["class_names"])
    run_training(cfg, names, config["num_train"], HeldFeed(cfg, names), RaySession(), lambda line: None)


def ray_train_held(cfg: ExperimentConfig, names: tuple[str, ...], count: int, run_name: str) -> float:
    """Images/s of the last epoch of one Ray Train worker (as ``train_on_ray`` places it)
    training on a :class:`HeldFeed`."""
    started = connect(num_cpus=None, include_dashboard=False, log_to_driver=False)
    try:
        trainer = ray.train.torch.TorchTrainer(
            _held_worker,
            train_loop_config={"experiment": to_dict(cfg), "class_names": list(names), "num_train": count},
            scaling_config=scaling_config(cfg),
            run_config=ray.train.RunConfig(name=run_name, storage_path=cfg.train.checkpoint_dir),
        )  # fmt: skip
        return trainer.fit().metrics["images_per_s"]
    finally:
        if started:
            ray.shutdown()


def line(name: str, ours: float, peer_name: str, peer: float, target: str) -> None:
    """Our images/s, the peer's, the target, and the ratio (ours / peer) last."""
    print(f"{name:<36} ours {ours:8.1f} img/s   {peer_name:<28} {peer:8.1f} img/s   {target:<9} "
          f"ratio {ours / peer:5.2f}x", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer images (a smoke run, not a measurement)")
    parser.add_argument("--rounds", type=int, default=2, help="training runs of each side, taking turns")
    args = parser.parse_args()
    count = 1200 if args.quick else 6000
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        cfg = load_config("configs/shapes_light.yaml", [
            f"data.root={base / 'shapes'}", f"data.shards={base / 'shards'}", f"data.num_train={count}",
            "data.num_val=32", "data.augment=ssd", "data.workers=2", "tracking.enabled=false",
            f"train.checkpoint_dir={base / 'runs'}", "train.epochs=3", "train.checkpoint_every=100",
        ])  # fmt: skip
        names = prepare_data(cfg, log=lambda line: None)
        # The plain loop trains in this process's main thread: the malloc settings every Ray
        # worker starts with (pipeline/host_memory.py) go to it too, so neither side has them alone.
        malloc = "freed memory kept" if keep_freed_memory_here() else "C library defaults"
        started = connect(num_cpus=None, include_dashboard=False, log_to_driver=False)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars, context.print_on_execution_start = False, False
        cpus = int(ray.cluster_resources()["CPU"])
        print(f"{count} generated {cfg.model.image_size} px images, SSD augmentation + light-model encoding, "
              f"{cpus} CPUs, malloc on both sides: {malloc}", flush=True)  # fmt: skip

        ours, peer = interleaved_images_per_s([ray_data_feed(cfg, names), dataloader_feed(cfg, names)])
        if started:
            ray.shutdown()  # each training run below starts its own
        line(f"preprocess, {cfg.data.workers} Ray Data tasks", ours, f"DataLoader, {cfg.data.workers} workers", peer,
             ">= 0.95x")  # fmt: skip

        # Training: one worker with one CPU reserved leaves the rest to one Ray Data worker.
        train_cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, workers=1))
        ray_runs, plain_runs = [], []
        for r in range(args.rounds):
            ray_runs.append(ray_train_epoch(train_cfg, f"bench-ray-{r}"))
            plain_runs.append(plain_epoch(train_cfg, names, count, base / "runs" / f"bench-plain-{r}"))
            print(f"  round {r + 1}: Ray Train worker {ray_runs[-1][0]:.1f} img/s (waiting for batches "
                  f"{100 * ray_runs[-1][1]:.0f}% of its epoch), plain loop {plain_runs[-1][0]:.1f} img/s "
                  f"(preprocessing inline, {100 * plain_runs[-1][1]:.0f}%)", flush=True)  # fmt: skip
        line("train epoch, 1 Ray Train worker", statistics.mean(r[0] for r in ray_runs),
             "plain single-process loop", statistics.mean(r[0] for r in plain_runs), ">= 0.90x")  # fmt: skip

        ray_held, plain_held_runs = [], []
        for r in range(args.rounds):
            ray_held.append(ray_train_held(train_cfg, names, count, f"bench-held-{r}"))
            plain_held_runs.append(plain_epoch(train_cfg, names, count, base / "runs" / f"bench-held-plain-{r}",
                                               HeldFeed(train_cfg, names))[0])
            print(f"  round {r + 1}: held batches, Ray Train worker {ray_held[-1]:.1f} img/s, plain process "
                  f"{plain_held_runs[-1]:.1f} img/s", flush=True)  # fmt: skip
        line("train alone, held batches, Ray Train", statistics.mean(ray_held), "the same in a plain process",
             statistics.mean(plain_held_runs), "")  # fmt: skip


if __name__ == "__main__":
    main()
