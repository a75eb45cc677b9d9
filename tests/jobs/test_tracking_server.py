"""The cluster's tracking, against the session's local S3: ``jobs.train`` on Ray, tracked to
an MLflow server whose artifacts live in a bucket (as ``cluster.yaml`` runs it) and
checkpointing into a bucket, then the best model pulled and the checkpoint evaluated
through that server."""

import boto3
import pytest
from mlflow import MlflowClient

from jobs.evaluate import main as evaluate
from jobs.pull_best import main as pull_best
from jobs.train import main as train


@pytest.mark.slow
def test_a_run_tracked_to_a_server_keeps_everything_in_its_bucket(tmp_path, bucket, tracking_server, ray_cluster,
                                                                   capsys):  # fmt: skip
    sets = [
        f"data.root={tmp_path / 'shapes'}", f"data.shards={tmp_path / 'shards'}", "data.augment=flip",
        "data.num_train=64", "data.num_val=16", "data.shapes_image_size=64", "train.epochs=1", "train.batch_size=16",
        "train.warmup_iters=2", "train.num_threads=1", f"train.checkpoint_dir={bucket}/runs", "train.run_name=served",
        f"tracking.uri={tracking_server}", "tracking.model_name=served", "name=served-exp", "eval.sample_images=4",
    ]  # fmt: skip
    assert train([arg for s in sets for arg in ("--set", s)]) == 0
    out = capsys.readouterr().out
    assert f"checkpoint: {bucket}/runs/served/epoch-0001\n" in out  # as jobs.evaluate takes it
    assert f"the MLflow UI: {tracking_server}\n" in out
    run_id = out.split("MLflow run ")[1].split(",")[0]
    client = MlflowClient(tracking_server)
    run = client.get_run(run_id)
    # Served from the bucket, not written to the disk of the worker that logged them.
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket.removeprefix("s3://"))["Contents"]]
    prefix = f"mlflow-artifacts/{run.info.experiment_id}/{run.info.run_id}/artifacts/"
    assert {f"{prefix}{name}" for name in ("config.yaml", "val_ap.md", "val_detections.png")} <= set(keys)
    version = client.get_model_version("served", "1")
    assert client.get_logged_model(version.source.split("/")[-1]).experiment_id == run.info.experiment_id
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "artifacts").exists()

    out_dir = tmp_path / "best"
    assert pull_best(["--tracking-uri", tracking_server, "--experiment", "served-exp", "--out", str(out_dir)]) == 0
    assert (out_dir / "weights.pt").is_file()
    capsys.readouterr()
    assert evaluate(["--model", f"{bucket}/runs/served/epoch-0001", "--shards", str(tmp_path / "shards"),
                     "--tracking-uri", tracking_server]) == 0  # fmt: skip
    logged = capsys.readouterr().out.split("logged to MLflow run ")[1].split()[0]
    assert client.get_run(logged).info.artifact_uri.startswith("mlflow-artifacts:/")
    assert client.get_run(logged).data.metrics["voc/mAP"] == pytest.approx(run.data.metrics["val/mAP"])
