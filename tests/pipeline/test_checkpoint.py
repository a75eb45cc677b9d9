import torch
from mlflow import MlflowClient

from pipeline.checkpoint import fetched_checkpoint, latest_checkpoint, load_checkpoint, save_checkpoint
from pipeline.config import load_config
from pipeline.local_train import train_locally


def config(tmp_path, run_name, *extra):
    return load_config(None, [
        f"data.root={tmp_path / 'shapes'}", f"data.shards={tmp_path / 'shards'}", "data.augment=flip",
        "data.num_train=48", "data.num_val=8", "data.shapes_image_size=64",
        "train.epochs=4", "train.batch_size=16", "train.warmup_iters=2", "train.num_threads=2",
        "train.checkpoint_every=2", f"train.checkpoint_dir={tmp_path / 'runs'}", f"train.run_name={run_name}",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"tracking.artifacts={tmp_path / 'artifacts'}",
        "tracking.model_name=ckpt-test", *extra,
    ])  # fmt: skip


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    quiet = lambda line: None  # noqa: E731
    straight = train_locally(config(tmp_path, "straight"), log=quiet)

    first = train_locally(config(tmp_path, "resumed", "train.time_limit_s=0"), log=quiet)
    assert len(first["reports"]) == 1  # stopped after epoch 1, with a checkpoint
    assert latest_checkpoint(tmp_path / "runs" / "resumed").name == "epoch-0001"
    lines = []
    second = train_locally(config(tmp_path, "resumed"), log=lines.append)
    assert any("resumed from" in line and "epoch 1 done" in line for line in lines)
    assert len(second["reports"]) == 3

    for (name, a), b in zip(straight["model"].state_dict().items(), second["model"].state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)
    assert second["mlflow_run_id"] == first["mlflow_run_id"]  # the same MLflow run goes on
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert [m.step for m in client.get_metric_history(second["mlflow_run_id"], "loss")] == [1, 2, 3, 4]

    # Started again once finished (a restored sweep does this): no more training, and the
    # final metrics, model URI included, are reported again rather than nothing.
    lines = []
    third = train_locally(config(tmp_path, "resumed"), log=lines.append)
    assert any("already finished at epoch 4" in line for line in lines)
    assert len(third["reports"]) == 1
    assert {k: third["reports"][0][k] for k in ("epoch", "val/mAP", "model_uri", "mlflow_run_id")} == {
        "epoch": 4, "val/mAP": second["val/mAP"], "model_uri": second["model_uri"],
        "mlflow_run_id": second["mlflow_run_id"],
    }  # fmt: skip
    assert [m.step for m in client.get_metric_history(second["mlflow_run_id"], "loss")] == [1, 2, 3, 4]
    assert client.get_run(second["mlflow_run_id"]).info.status == "FINISHED"


def test_checkpoints_are_complete_and_pruned(tmp_path):
    train_locally(config(tmp_path, "pruned", "train.keep_checkpoints=1", "tracking.enabled=false"), log=lambda s: None)
    kept = sorted(p.name for p in (tmp_path / "runs" / "pruned").iterdir())
    assert kept == ["epoch-0004"]
    (tmp_path / "runs" / "pruned" / "epoch-0005.partial").mkdir()  # a crash mid-write
    found = latest_checkpoint(tmp_path / "runs" / "pruned")
    assert found.name == "epoch-0004"
    from ssd_core.models import ssd_light

    meta = load_checkpoint(found, ssd_light(6))
    assert meta["epoch"] == 4 and meta["config"]["train"]["run_name"] == "pruned"


def test_fetched_checkpoint_from_a_folder_or_a_bucket(tmp_path, bucket):
    import pyarrow.fs as pafs

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0)
    saved = save_checkpoint(tmp_path / "runs", model, optimizer, scheduler, 7, {"name": "x"})
    with fetched_checkpoint(saved) as here:
        assert here == saved  # a local checkpoint is used where it is
    with fetched_checkpoint(tmp_path / "runs") as none:
        assert none is None  # a folder of checkpoints is not one

    s3, root = pafs.FileSystem.from_uri(bucket)
    pafs.copy_files(str(saved), f"{root}/runs/epoch-0007", destination_filesystem=s3)
    with fetched_checkpoint(f"{bucket}/runs/epoch-0007") as local:
        assert local.name == "epoch-0007" and local.is_dir()
        fresh = torch.nn.Linear(3, 2)
        assert load_checkpoint(local, fresh)["epoch"] == 7
        assert torch.equal(fresh.weight, model.weight)
    assert not local.exists()  # the download lasts as long as the block
    for elsewhere in (f"{bucket}/runs", f"{bucket}/nothing", "mlflow-artifacts://host/x"):
        with fetched_checkpoint(elsewhere) as none:
            assert none is None, elsewhere
