"""Ray Data and Ray Train against their plain-PyTorch peers, on this machine.

    python -m benchmarks.pipeline [--quick]

1. Preprocessing: the training transform (Parquet shard rows -> decode -> augmentation ->
   SSD target encoding) through Ray Data ``map_batches`` vs the same transform in a
   ``torch.utils.data.DataLoader`` with the same number of worker processes, three epochs
   of the generated shapes set each, after a warm-up epoch. Target: >= 0.95x images/s.
2. Training: one Ray Train worker (Ray Data feeding it) vs a plain single-process loop
   doing the same per-epoch work inline (read shards, decode, augment, encode, train),
   images/s of the last of three epochs each. Target: at most 10% slower (>= 0.90x).

Each line prints ours (Ray), the peer's figure from the same run, and the ratio last
(our images/s over the peer's: higher is better for us).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pyarrow.parquet as pq
import ray
import torch

from pipeline.config import ExperimentConfig, load_config, to_dict
from pipeline.local_train import LocalSession, prepare_data
from pipeline.ray_data import EpochClock, TrainTransform, train_dataset
from pipeline.ray_runtime import connect
from pipeline.ray_train import train_on_ray
from pipeline.train_loop import run_training
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


# Epochs timed after a first one that starts the worker processes: ~2 s each on 2 CPUs,
# so one alone varies by +-5% from run to run.
TIMED_EPOCHS = (2, 3, 4)


def images_per_s(epoch_batches: Callable[[int], Iterable[dict]]) -> float:
    """Images/s over ``TIMED_EPOCHS``, after an untimed first epoch; ``epoch_batches(e)``
    sets up epoch ``e`` and returns its batches (dicts with ``image`` [B, ...])."""
    n, seconds = 0, 0.0
    for epoch in (1, *TIMED_EPOCHS):
        batches = epoch_batches(epoch)
        start, count = time.perf_counter(), 0
        for batch in batches:
            count += batch["image"].shape[0]
        if epoch in TIMED_EPOCHS:
            n, seconds = n + count, seconds + time.perf_counter() - start
    return n / seconds


def images_per_s_ray_data(cfg: ExperimentConfig, names: tuple[str, ...]) -> float:
    clock = EpochClock.remote()
    ds = train_dataset(cfg, names, clock)

    def epoch_batches(epoch: int) -> Iterable[dict]:
        ray.get(clock.set.remote(epoch))
        return ds.iter_torch_batches(batch_size=cfg.train.batch_size)

    return images_per_s(epoch_batches)


def images_per_s_dataloader(cfg: ExperimentConfig, names: tuple[str, ...]) -> float:
    return images_per_s(lambda epoch: torch.utils.data.DataLoader(
        ShardStream(cfg, names, epoch), batch_size=None, num_workers=cfg.data.workers))  # fmt: skip


def line(name: str, ours: float, peer_name: str, peer: float, target: str) -> None:
    """Our images/s, the peer's, the target, and the ratio (ours / peer) last."""
    print(f"{name:<36} ours {ours:8.1f} img/s   {peer_name:<28} {peer:8.1f} img/s   {target:<9} "
          f"ratio {ours / peer:5.2f}x", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer images (a smoke run, not a measurement)")
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
        connect(num_cpus=None, include_dashboard=False, log_to_driver=False)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars, context.print_on_execution_start = False, False
        cpus = int(ray.cluster_resources()["CPU"])
        print(f"{count} generated 128 px images, SSD augmentation + light-model encoding, {cpus} CPUs", flush=True)

        ours = images_per_s_ray_data(cfg, names)
        peer = images_per_s_dataloader(cfg, names)
        line(f"preprocess, {cfg.data.workers} Ray Data tasks", ours, f"DataLoader, {cfg.data.workers} workers", peer,
             ">= 0.95x")  # fmt: skip

        # Training: one worker with one CPU reserved leaves the rest to one Ray Data worker.
        train_cfg = dataclasses.replace(
            cfg, data=dataclasses.replace(cfg.data, workers=1),
            train=dataclasses.replace(cfg.train, run_name="bench-ray", resume=False),
        )  # fmt: skip
        result = train_on_ray(train_cfg, log=lambda line: None)
        ours = result.metrics["images_per_s"]
        ray.shutdown()
        session = LocalSession(base / "runs" / "bench-plain", keep=1, resume=False)
        run_training(train_cfg, names, count, InlineFeed(train_cfg, names), session, lambda line: None)
        peer = session.reports[-1]["images_per_s"]
        print(f"  waiting for batches: Ray Train worker {100 * result.metrics['data_wait']:.0f}% of its epoch, "
              f"plain loop {100 * session.reports[-1]['data_wait']:.0f}% (it preprocesses inline)", flush=True)
        line("train epoch, 1 Ray Train worker", ours, "plain single-process loop", peer, ">= 0.90x")


if __name__ == "__main__":
    main()

