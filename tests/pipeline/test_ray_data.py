"""How Ray Data lays out the training read: tasks per shard, fusion, splitting."""

import cv2
import pyarrow.parquet as pq
import pytest
import ray

from pipeline import ray_data
from pipeline.config import load_config, to_dict
from pipeline.local_train import prepare_data
from pipeline.ray_data import (
    EpochClock,
    TrainTransform,
    ValTransform,
    train_dataset,
    transform_key,
    warm_up_train_transform,
)
from ssd_core.data.shards import read_shards, shard_paths, write_shards


def test_one_fused_task_per_shard(tmp_path, ray_cluster):
    """Each shard is read and transformed by one task (read fused with the map): equal
    tasks, so both data workers stay busy to the end of the epoch."""
    cfg = load_config(None, [
        f"data.root={tmp_path / 'shapes'}", f"data.shards={tmp_path / 'shards'}", "data.num_train=96",
        "data.num_val=8", "data.shapes_image_size=64", "data.map_batch_size=16", "data.workers=2",
    ])  # fmt: skip
    names = prepare_data(cfg, log=lambda line: None)
    # Six shards of 16 instead of the one prepare_data wrote.
    records = list(read_shards(cfg.data.shards, "train"))
    write_shards(records, tmp_path / "six", "train", shard_size=16)
    write_shards(list(read_shards(cfg.data.shards, "val")), tmp_path / "six", "val", shard_size=16)
    cfg = load_config(None, [f"data.shards={tmp_path / 'six'}", "data.source=shards", "data.num_train=96",
                             "data.shapes_image_size=64", "data.map_batch_size=16", "data.workers=2"])  # fmt: skip
    clock = EpochClock.remote()
    ray.get(clock.set.remote(1))
    ds = train_dataset(cfg, names, clock)
    sizes = [len(b["image"]) for b in ds.iter_batches(batch_size=None, batch_format="numpy")]
    assert sum(sizes) == 96
    stats = ds.stats()
    assert "ReadParquet->MapBatches(_train_batches): 6 tasks executed" in stats, stats


@pytest.mark.parametrize("workers", [2, 4])
def test_fewer_shards_than_two_per_worker_are_split(tmp_path, ray_cluster, workers):
    cfg = load_config(None, [
        f"data.root={tmp_path / 'shapes'}", f"data.shards={tmp_path / 'shards'}", "data.num_train=48",
        "data.num_val=8", "data.shapes_image_size=64", "data.map_batch_size=16", f"data.workers={workers}",
    ])  # fmt: skip
    names = prepare_data(cfg, log=lambda line: None)  # one shard
    clock = EpochClock.remote()
    ray.get(clock.set.remote(1))
    ds = train_dataset(cfg, names, clock)
    assert sum(len(b["image"]) for b in ds.iter_batches(batch_size=None, batch_format="numpy")) == 48
    assert f"MapBatches(_train_batches): {2 * workers} tasks executed" in ds.stats()


@pytest.mark.parametrize("cpus", [0.5, 1, 3])
def test_transforms_run_opencv_on_the_task_cpus(cpus):
    """OpenCV's pool spans every core unless told otherwise, and a data task that holds
    one CPU would compete with the training worker beside it for the rest."""
    before = cv2.getNumThreads()
    try:
        for kind in (TrainTransform, ValTransform):
            cv2.setNumThreads(7)
            kind(to_dict(load_config(None, [f"data.cpus_per_worker={cpus}"])), ("a", "b"))
            assert cv2.getNumThreads() == max(1, int(cpus)), kind
    finally:
        cv2.setNumThreads(before)


def test_the_warm_up_builds_the_transform_an_epochs_task_then_finds(tmp_path, ray_cluster):
    """The warm-up runs (a broken one would fail silently, nobody reads its refs), and it
    caches the transform under the key an epoch's task looks it up by."""
    cfg = load_config(None, [
        f"data.root={tmp_path / 'shapes'}", f"data.shards={tmp_path / 'shards'}", "data.num_train=16",
        "data.num_val=8", "data.shapes_image_size=64", "data.map_batch_size=8", "data.workers=2",
    ])  # fmt: skip
    names = prepare_data(cfg, log=lambda line: None)
    refs = warm_up_train_transform(cfg, names)
    assert len(refs) == 2 and ray.get(refs) == [None, None]

    # The same two steps in this process: the warm-up's function, then an epoch's map.
    ray_data._transform.cache_clear()
    ray_data._build_train_transform._function(**transform_key(cfg, names))
    clock = EpochClock.remote()
    ray.get(clock.set.remote(1))
    table = pq.read_table(shard_paths(cfg.data.shards, "train")[0])
    block = {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}
    out = list(ray_data._train_batches(block, **transform_key(cfg, names), clock=clock, chunk=8))
    assert sum(len(b["image"]) for b in out) == 16
    assert ray_data._transform.cache_info().misses == 1  # built once, by the warm-up
