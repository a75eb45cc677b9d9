"""Ray Train: the per-worker loop on a ``TorchTrainer``, fed by Ray Data.

``train_on_ray`` (driver) prepares the shards, builds the datasets, and fits a
``TorchTrainer`` whose workers each run :func:`pipeline.train_loop.run_training` with a
:class:`RayFeed` (their Ray Data shard) and a :class:`RaySession` (DDP, Ray Train's
report and checkpoints). The same code runs on a laptop's local Ray and on a cluster;
only the Ray address, the tracking URI and the storage paths differ.

Runs live in ``{train.checkpoint_dir}/{train.run_name}`` (a local folder or a bucket):
starting a run again with the same name resumes it from its latest checkpoint (Ray Train
V2), and a failed worker restarts the group from there (``train.max_failures``).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from ray.data import DataContext
from ray.data.exceptions import ExecutionTimeoutError

from pipeline.checkpoint import local_folder
from pipeline.config import ExperimentConfig, from_dict, to_dict
from pipeline.local_train import prepare_data, print_now
from pipeline.ray_data import EpochClock, train_dataset, val_datasets, warm_up_train_transform
from pipeline.tracking import ensure_experiment
from pipeline.train_loop import TrainBatch, run_training
from ssd_core.data.shards import check_shards


class DataStallError(RuntimeError):
    """The training data stopped coming (a starved or stuck Ray Data pipeline)."""


class RayFeed:
    """This worker's Ray Data shards: ``train`` (split across workers) and ``val_{rank}``."""

    def __init__(self, cfg: ExperimentConfig, rank: int, world_size: int, clock: Any) -> None:
        self.cfg, self.rank, self.clock = cfg, rank, clock
        self.train = ray.train.get_dataset_shard("train")
        self.val = ray.train.get_dataset_shard(f"val_{rank}")

    def train_batches(self, epoch: int) -> Iterator[TrainBatch]:
        # Every worker sets the clock before it starts the epoch's iteration, and the
        # streaming split starts an epoch only when all workers have asked for it: the
        # transform never sees a stale epoch. (The previous epoch has been drained by all
        # workers: the loop gathers every rank's epoch statistics first.)
        ray.get(self.clock.set.remote(epoch))
        c = self.cfg
        batches = self.train.iter_torch_batches(
            batch_size=c.train.batch_size, drop_last=True, local_shuffle_buffer_size=c.data.shuffle_buffer or None,
            local_shuffle_seed=hash((c.train.seed, epoch, self.rank)) % 2**31 if c.data.shuffle_buffer else None,
        )  # fmt: skip
        try:
            for batch in batches:
                yield batch["image"], batch["loc_targets"], batch["labels"]
        except ExecutionTimeoutError as err:
            raise DataStallError(
                f"epoch {epoch}: the Ray Data pipeline made no progress for data.stall_timeout_s="
                f"{c.data.stall_timeout_s:g}s. Usually it has no CPU: the cluster has "
                f"{ray.cluster_resources().get('CPU', 0):g} CPUs "
                f"({ray.available_resources().get('CPU', 0):g} free now); "
                f"the train workers reserve {c.train.num_workers} x train.cpus_per_worker={c.train.cpus_per_worker:g} "
                f"and Ray Data wants data.workers={c.data.workers} x data.cpus_per_worker={c.data.cpus_per_worker:g}"
            ) from err

    def val_batches(self) -> Iterator[dict[str, Any]]:
        return self.val.iter_batches(batch_size=self.cfg.eval.batch_size, batch_format="numpy")


class RaySession:
    """A Ray Train worker: its rank, device, DDP group, checkpoints and reports."""

    def __init__(self) -> None:
        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device()

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        # DDP (gloo on CPU, NCCL on GPU) when there are several workers.
        return ray.train.torch.prepare_model(model, move_to_device=False)

    @contextlib.contextmanager
    def restored(self) -> Iterator[Path | None]:
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            yield None
            return
        # Not as_directory(): from a bucket it names the download checkpoint_tmp_<hex>,
        # where the resume line should show epoch-N.
        with local_folder(checkpoint.filesystem, checkpoint.path) as folder:
            yield folder

    def all_gather(self, value: Any) -> list[Any]:
        if self.world_size == 1 or not dist.is_initialized():
            return [value]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def report(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(checkpoint) if checkpoint is not None else None,
            checkpoint_dir_name=checkpoint.name if checkpoint is not None else None,
        )


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """What each Ray Train worker runs."""
    cfg = from_dict(config["experiment"])
    session = RaySession()
    if session.rank == 0:
        # From here, not the driver: Ray Train gives its actors an environment of its own,
        # which the epoch's data tasks inherit, and a process is reused only within one.
        warm_up_train_transform(cfg, config["class_names"])
    feed = RayFeed(cfg, session.rank, session.world_size, config["clock"])
    # Ray Train routes a worker's print through its logger and also tees it to stdout
    # (every line twice in the job log); its logger alone gives one line.
    logger = logging.getLogger("ssd")
    logger.setLevel(logging.INFO)
    run_training(cfg, tuple(config["class_names"]), config["num_train"], feed, session, logger.info)


def check_resources(cfg: ExperimentConfig, log: Callable[[str], None]) -> None:
    """Say so up front when the train workers leave the Ray Data workers no CPU (the
    pipeline would otherwise wait for one until ``data.stall_timeout_s``)."""
    total = ray.cluster_resources().get("CPU", 0.0)
    free = ray.available_resources().get("CPU", 0.0)  # less in a sweep: other trials, this trial's driver
    train = cfg.train.num_workers * cfg.train.cpus_per_worker
    data = cfg.data.workers * cfg.data.cpus_per_worker
    if train + data > free + 1e-9:
        message = (
            f"the train workers reserve {train:g} CPUs (train.num_workers={cfg.train.num_workers} x "
            f"train.cpus_per_worker={cfg.train.cpus_per_worker:g}) and Ray Data wants {data:g} "
            f"(data.workers x data.cpus_per_worker) but the cluster has {total:g} ({free:g} free now): "
            f"lower train.cpus_per_worker "
            f"(a fraction is fine) or data.workers, or add nodes; an autoscaler may add them, otherwise "
            f"the data pipeline stalls and fails after data.stall_timeout_s={cfg.data.stall_timeout_s:g}s"
        )
        warnings.warn(message, stacklevel=2)
        log(f"warning: {message}")


def scaling_config(cfg: ExperimentConfig) -> ray.train.ScalingConfig:
    """The train workers and what each reserves (a GPU each with ``train.use_gpu``)."""
    resources = {"CPU": cfg.train.cpus_per_worker}
    if cfg.train.use_gpu:
        resources["GPU"] = 1
    return ray.train.ScalingConfig(num_workers=cfg.train.num_workers, use_gpu=cfg.train.use_gpu,
                                   resources_per_worker=resources)  # fmt: skip


def train_on_ray(
    cfg: ExperimentConfig, log: Callable[[str], None] = print_now, callbacks: Sequence[Any] = ()
) -> ray.train.Result:
    """Fit the config on the Ray cluster this process is connected to (``ray.init()``
    first); returns Ray Train's result (``metrics`` of rank 0's last report, with
    ``val/mAP``, ``mlflow_run_id`` and ``model_uri``; ``checkpoint``; ``best_checkpoints``).
    ``callbacks``: Ray Train callbacks (a sweep passes Tune's report callback)."""
    class_names = prepare_data(cfg, log)
    num_train, num_val = check_shards(cfg.data.shards, "train"), check_shards(cfg.data.shards, "val")
    log(f"data: {num_train} train / {num_val} val images at {cfg.data.shards}, classes {', '.join(class_names)}")
    check_resources(cfg, log)
    if cfg.tracking.enabled:
        ensure_experiment(cfg.tracking, cfg.name, log)  # once, here: not raced by workers

    context = DataContext.get_current()
    context.execution_no_progress_timeout_s = cfg.data.stall_timeout_s
    context.enable_progress_bars = False  # one line per epoch from the loop instead
    context.print_on_execution_start = False
    clock = EpochClock.remote()
    workers = cfg.train.num_workers
    datasets = {"train": train_dataset(cfg, class_names, clock), **val_datasets(cfg, class_names, workers)}
    ingest = ray.train.DataConfig.default_ingest_options()  # Ray Train's own, from the DataContext
    ingest.preserve_order = cfg.data.preserve_order
    trainer = ray.train.torch.TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"experiment": to_dict(cfg), "class_names": list(class_names), "num_train": num_train,
                           "clock": clock},  # fmt: skip
        scaling_config=scaling_config(cfg),
        run_config=ray.train.RunConfig(
            name=cfg.train.run_name or cfg.name,
            storage_path=cfg.train.checkpoint_dir,
            failure_config=ray.train.FailureConfig(max_failures=cfg.train.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=cfg.train.keep_checkpoints, checkpoint_score_attribute="val/mAP",
                checkpoint_score_order="max",
            ),  # fmt: skip
            callbacks=list(callbacks),
        ),
        datasets=datasets,
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"], execution_options={"train": ingest}),
    )
    return trainer.fit()

