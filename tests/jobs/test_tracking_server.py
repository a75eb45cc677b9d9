"""The cluster's tracking, against the session's local S3: a run on Ray tracked to an MLflow
server whose artifacts live in a bucket (as ``cluster.yaml`` runs it), then the best
model pulled and evaluated through that server."""

import boto3
import pytest
from mlflow import MlflowClient

from jobs.evaluate import main as evaluate
from jobs.pull_best import main as pull_best
from pipeline.config import load_config
from pipeline.ray_train import train_on_ray


@pytest.mark.slow
def test_a_run_tracked_to_a_server_keeps_everything_in_its_bucket(tmp_path, bucket, tracking_server, ray_cluster,
                                                                   capsys):  # fmt: skip
    cfg = load_config(None, [
        f"data.root={tmp_path / 'shapes'}", f"data.shards={tmp_path / 'shards'}", "data.augment=flip",
        "data.num_train=64", "data.num_val=16", "data.shapes_image_size=64", "train.epochs=1", "train.batch_size=16",
        "train.warmup_iters=2", "train.num_threads=1", f"train.checkpoint_dir={tmp_path / 'runs'}",
        "train.run_name=served", f"tracking.uri={tracking_server}", "tracking.model_name=served", "name=served-exp",
        "eval.sample_images=4",
    ])  # fmt: skip
    m = train_on_ray(cfg, log=lambda line: None).metrics
    client = MlflowClient(tracking_server)
    run = client.get_run(m["mlflow_run_id"])
    # Served from the bucket, not written to the disk of the worker that logged them.
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket.removeprefix("s3://"))["Contents"]]
    prefix = f"mlflow-artifacts/{run.info.experiment_id}/{run.info.run_id}/artifacts/"
    assert {f"{prefix}{name}" for name in ("config.yaml", "val_ap.md", "val_detections.png")} <= set(keys)
    version = client.get_model_version("served", "1")
    assert client.get_logged_model(version.source.split("/")[-1]).experiment_id == run.info.experiment_id
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "artifacts").exists()

    out = tmp_path / "best"
    assert pull_best(["--tracking-uri", tracking_server, "--experiment", "served-exp", "--out", str(out)]) == 0
    assert (out / "weights.pt").is_file()
    capsys.readouterr()
    assert evaluate(["--model", "models:/served/1", "--shards", str(tmp_path / "shards"), "--tracking-uri",
                     tracking_server]) == 0  # fmt: skip
    logged = capsys.readouterr().out.split("logged to MLflow run ")[1].split()[0]
    assert client.get_run(logged).info.artifact_uri.startswith("mlflow-artifacts:/")
    assert client.get_run(logged).data.metrics["voc/mAP"] == pytest.approx(m["val/mAP"])
