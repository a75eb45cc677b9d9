"""Ray Data + Ray Train on the session's local Ray (tests/conftest.py: 8 logical CPUs)."""

import hashlib
import os
import signal
import threading
import time
from pathlib import Path

import mlflow
import numpy as np
import pyarrow.fs as pafs
import pytest
import ray
import torch
from mlflow import MlflowClient

from pipeline.config import load_config
from pipeline.evaluation import load_any_with_config
from pipeline.local_train import MemoryFeed, prepare_data
from pipeline.model_store import load_model
from pipeline.ray_data import EpochClock, train_dataset, val_datasets
from pipeline.ray_train import train_on_ray
from ssd_core.data.record import DataError

pytestmark = pytest.mark.usefixtures("ray_cluster")


def tiny(tmp_path, run_name, *extra):
    return load_config(None, [
        f"data.root={tmp_path / 'shapes'}", f"data.shards={tmp_path / 'shards'}", "data.augment=ssd",
        "data.num_train=96", "data.num_val=20", "data.shapes_image_size=64", "data.map_batch_size=16",
        "train.epochs=2", "train.batch_size=16", "train.warmup_iters=2", "train.num_threads=1",
        "train.checkpoint_every=1", f"train.checkpoint_dir={tmp_path / 'runs'}", f"train.run_name={run_name}",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"tracking.artifacts={tmp_path / 'artifacts'}",
        "tracking.model_name=ray-test", "eval.sample_images=4", *extra,
    ])  # fmt: skip


def digests(images: torch.Tensor, loc: torch.Tensor, labels: torch.Tensor) -> set[str]:
    """One fingerprint per sample (image, targets): comparable whatever the batch order."""
    return {
        hashlib.sha1(images[i].numpy().tobytes() + loc[i].numpy().tobytes() + labels[i].numpy().tobytes()).hexdigest()
        for i in range(images.shape[0])
    }


def test_ray_data_draws_the_in_process_samples_for_each_epoch(tmp_path):
    cfg = tiny(tmp_path, "data", "train.batch_size=8")
    names = prepare_data(cfg, log=lambda line: None)
    memory = MemoryFeed(cfg, names)
    clock = EpochClock.remote()
    ds = train_dataset(cfg, names, clock)

    def ray_epoch(epoch: int) -> set[str]:
        ray.get(clock.set.remote(epoch))
        out: set[str] = set()
        for b in ds.iter_torch_batches(batch_size=8):
            assert b["image"].dtype == torch.uint8 and b["loc_targets"].dtype == torch.float32
            assert b["labels"].dtype == torch.int64
            out |= digests(b["image"], b["loc_targets"], b["labels"])
        return out

    first = ray_epoch(1)
    assert len(first) == 96
    assert first == set().union(*(digests(*batch) for batch in memory.train_batches(1)))
    assert ray_epoch(1) == first  # reproducible
    assert not (ray_epoch(2) & first)  # a fresh draw every epoch

    shares = val_datasets(cfg, names, parts=3)
    ids = [i for share in shares.values() for b in share.iter_batches(batch_format="numpy") for i in b["image_id"]]
    assert sorted(ids) == sorted(r.image_id for r in memory.val)  # every image in exactly one share


def test_two_worker_run_tracks_and_registers_the_model(tmp_path):
    cfg = tiny(tmp_path, "two", "train.num_workers=2", "eval.coco=true")
    result = train_on_ray(cfg, log=lambda line: None)
    m = result.metrics
    assert m["epoch"] == 2 and m["val/images"] == 20 and 0.0 <= m["val/mAP"] <= 1.0
    assert "val/coco/AP" in m and m["model_uri"] == "models:/ray-test/1"
    assert sorted(p.name for p in (tmp_path / "runs" / "two").glob("epoch-*")) == ["epoch-0001", "epoch-0002"]

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(m["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.params["train.num_workers"] == "2"
    assert [h.step for h in client.get_metric_history(run.info.run_id, "loss")] == [1, 2]
    assert [h.step for h in client.get_metric_history(run.info.run_id, "val/mAP")] == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "val_ap.md", "pr_curves", "val_detections.png"} <= artifacts

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    model, config, class_names = load_model(m["model_uri"])
    assert config.train.num_workers == 2 and class_names[0] == "circle"
    assert torch.isfinite(model(torch.rand(1, 3, 128, 128))[1]).all()


def test_same_seeds_same_run_with_data_tasks_racing(tmp_path):
    """Three shards read by three Ray Data tasks at once, in order (data.preserve_order):
    two runs from the same seeds train on the same batches and end with the same model."""
    from pipeline.prepare import PrepareRequest, prepare_shards

    request = PrepareRequest("shapes", str(tmp_path / "shapes"), str(tmp_path / "shards"), shard_size=32,
                             shapes_train=96, shapes_val=20, shapes_image_size=64)  # fmt: skip
    prepare_shards(request, log=lambda line: None)
    finals = []
    for name in ("first", "again"):
        cfg = tiny(tmp_path, name, "data.source=shards", "data.workers=3", "data.preserve_order=true",
                   "data.map_batch_size=8", "tracking.enabled=false", "train.checkpoint_every=2")  # fmt: skip
        m = train_on_ray(cfg, log=lambda line: None).metrics
        finals.append((m["loss"], m["loss_loc"], m["loss_cls"], m["val/mAP"]))
    assert finals[0] == finals[1]


def test_a_run_with_its_shards_and_checkpoints_in_a_bucket(tmp_path, bucket):
    """What a cluster does, against the session's local S3: shards and runs in a bucket.
    The run checkpoints into the bucket, resumes from there in the same MLflow run when it
    is started again with more epochs, and its checkpoint loads straight from the bucket."""
    cfg = tiny(tmp_path, "cloud", f"data.shards={bucket}/shards", f"train.checkpoint_dir={bucket}/runs",
               "data.augment=flip")  # fmt: skip
    first = train_on_ray(cfg, log=lambda line: None).metrics
    s3, root = pafs.FileSystem.from_uri(f"{bucket}/runs/cloud")
    assert {"epoch-0001", "epoch-0002"} <= {i.base_name for i in s3.get_file_info(pafs.FileSelector(root))}
    assert not (tmp_path / "shards").exists()  # written to the bucket only

    more = tiny(tmp_path, "cloud", f"data.shards={bucket}/shards", f"train.checkpoint_dir={bucket}/runs",
                "data.augment=flip", "data.source=shards", "train.epochs=3")  # fmt: skip
    result = train_on_ray(more, log=lambda line: None)
    m = result.metrics
    assert m["epoch"] == 3 and m["mlflow_run_id"] == first["mlflow_run_id"]
    assert result.checkpoint.path.endswith("cloud/epoch-0003")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert [h.value for h in client.get_metric_history(m["mlflow_run_id"], "resumed_from_epoch")] == [2]
    assert [h.step for h in client.get_metric_history(m["mlflow_run_id"], "loss")] == [1, 2, 3]

    model, config, names = load_any_with_config(f"{bucket}/runs/cloud/epoch-0003")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    registered, _, _ = load_model(m["model_uri"])  # registered from the same final weights
    assert config.train.epochs == 3 and names[0] == "circle"
    for name, weights in registered.state_dict().items():
        assert torch.equal(model.state_dict()[name], weights), name


def _kill_a_worker_after(run_dir: Path, checkpoint: str, killed: list[int]) -> None:
    """SIGKILL a train worker once Ray Train has committed ``checkpoint`` (listed in its
    checkpoint manager's snapshot; the folder alone exists while it is being uploaded)."""
    from ray.util.state import list_actors

    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (snapshot.is_file() and checkpoint in snapshot.read_text()):
        time.sleep(0.2)
    for actor in list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")]):
        os.kill(actor.pid, signal.SIGKILL)
        killed.append(actor.pid)
        return


def test_killed_worker_resumes_from_the_last_checkpoint(tmp_path):
    cfg = tiny(tmp_path, "fault", "train.epochs=4", "data.num_train=160", "train.max_failures=2")
    killed: list[int] = []
    watcher = threading.Thread(
        target=_kill_a_worker_after, args=(tmp_path / "runs" / "fault", "epoch-0001", killed), daemon=True
    )
    watcher.start()
    result = train_on_ray(cfg, log=lambda line: None)
    watcher.join(timeout=5)
    assert killed, "no worker was killed"
    assert result.metrics["epoch"] == 4

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = result.metrics["mlflow_run_id"]
    resumed = client.get_metric_history(run_id, "resumed_from_epoch")
    assert resumed and resumed[0].value >= 1  # resumed from a checkpoint, not from scratch
    steps = [h.step for h in client.get_metric_history(run_id, "loss")]
    assert steps.count(1) == 1 and sorted(set(steps)) == [1, 2, 3, 4]  # epoch 1 never trained again


def test_a_starved_pipeline_fails_with_a_message(tmp_path):
    # The train worker takes every CPU of the 8-CPU test cluster: Ray Data gets none.
    cfg = tiny(tmp_path, "starved", "train.cpus_per_worker=8", "data.stall_timeout_s=10", "train.max_failures=0",
               "tracking.enabled=false")  # fmt: skip
    with pytest.warns(UserWarning, match="leaves? no|reserve 8 CPUs"), pytest.raises(Exception) as failure:
        train_on_ray(cfg, log=lambda line: None)
    assert "made no progress" in str(failure.value) and "train.cpus_per_worker=8" in str(failure.value)


def test_bad_data_fails_before_training(tmp_path):
    cfg = tiny(tmp_path, "bad", "data.source=shards", f"data.shards={tmp_path / 'nowhere'}")
    with pytest.raises(DataError, match="nowhere"):
        train_on_ray(cfg, log=lambda line: None)

    good = tiny(tmp_path, "bad")
    prepare_data(good, log=lambda line: None)
    shard = next((tmp_path / "shards").glob("train-*.parquet"))
    shard.write_bytes(b"not parquet at all")
    cfg = tiny(tmp_path, "bad", "data.source=shards")
    with pytest.raises(DataError, match=shard.name):
        train_on_ray(cfg, log=lambda line: None)


def test_image_index_is_stable():
    from pipeline.samples import image_index

    assert image_index("000005") == image_index("000005") != image_index("000007")
    assert np.iinfo(np.uint32).max >= image_index("x") >= 0


def test_resource_check_names_what_does_not_fit():
    from pipeline.ray_train import check_resources

    free = ray.available_resources()["CPU"]
    lines = []
    fits = load_config(None, ["train.cpus_per_worker=1", "data.workers=1", "data.cpus_per_worker=1"])
    check_resources(fits, lines.append)
    assert lines == []
    too_many = load_config(None, [f"train.cpus_per_worker={free}", "data.workers=1", "data.cpus_per_worker=0.5"])
    with pytest.warns(UserWarning, match="free now"):
        check_resources(too_many, lines.append)
    assert len(lines) == 1 and "data.stall_timeout_s" in lines[0]
