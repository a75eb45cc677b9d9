import pytest
import torch
from mlflow import MlflowClient

from jobs.evaluate import main
from pipeline.config import load_config
from pipeline.local_train import train_locally


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trained")
    cfg = load_config(None, [
        f"data.root={tmp / 'shapes'}", f"data.shards={tmp / 'shards'}", "data.augment=flip",
        "data.num_train=64", "data.num_val=16", "train.epochs=2", "train.batch_size=16", "train.warmup_iters=2",
        "train.num_threads=2", f"train.checkpoint_dir={tmp / 'runs'}", "train.run_name=evaljob",
        f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}", f"tracking.artifacts={tmp / 'artifacts'}",
        "tracking.model_name=eval-test",
    ])  # fmt: skip
    return tmp, train_locally(cfg, log=lambda line: None)


def test_registered_model_reproduces_its_logged_map(trained, capsys):
    tmp, result = trained
    args = ["--model", "models:/eval-test/1", "--shards", str(tmp / "shards"), "--tracking-uri",
            f"sqlite:///{tmp / 'mlflow.db'}"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"VOC07 mAP@0.5 {result['val/mAP']:.3f}" in out and "COCO: AP" in out


def test_evaluation_is_logged_as_a_run_beside_the_training_runs(trained, capsys):
    tmp, result = trained
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    checkpoint = tmp / "runs" / "evaljob" / "epoch-0002"
    assert main(["--model", str(checkpoint), "--shards", str(tmp / "shards"), "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert f"VOC07 mAP@0.5 {result['val/mAP']:.3f}" in out and "evaluating val on cpu: 16/16 (100%)" in out

    client = MlflowClient(uri)
    run_id = out.split("logged to MLflow run ")[1].split()[0]
    run = client.get_run(run_id)
    assert client.get_experiment(run.info.experiment_id).name == "shapes-light"  # the model's config's name
    assert run.info.run_name == "evaluate-val" and run.info.status == "FINISHED"
    assert run.data.tags["evaluated.model"] == str(checkpoint) and run.data.tags["evaluated.split"] == "val"
    assert run.data.metrics["voc/mAP"] == pytest.approx(result["val/mAP"]) and "coco/AP" in run.data.metrics
    assert run.data.params["train.epochs"] == "2"
    assert "ap_table.md" in {a.path for a in client.list_artifacts(run_id)}

    assert main(["--model", str(checkpoint), "--shards", str(tmp / "shards"), "--tracking-uri", uri, "--no-log"]) == 0
    assert "logged to" not in capsys.readouterr().out


def test_an_unreachable_tracking_store_warns_and_the_metrics_still_print(trained, capsys, tmp_path):
    tmp, result = trained
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("a file where the store's folder would be")
    args = ["--model", str(tmp / "runs" / "evaljob" / "epoch-0002"), "--shards", str(tmp / "shards"),
            "--tracking-uri", f"sqlite:///{blocked / 'mlflow.db'}"]  # fmt: skip
    with pytest.warns(UserWarning, match="evaluation goes on without tracking"):
        assert main(args) == 0
    assert f"VOC07 mAP@0.5 {result['val/mAP']:.3f}" in capsys.readouterr().out


def test_checkpoint_folder_and_errors(trained, capsys):
    tmp, result = trained
    args = ["--model", str(tmp / "runs" / "evaljob" / "epoch-0002"), "--shards", str(tmp / "shards"), "--no-log"]
    assert main(args) == 0
    assert f"VOC07 mAP@0.5 {result['val/mAP']:.3f}" in capsys.readouterr().out
    assert main(["--model", str(tmp / "nothing-here"), "--shards", str(tmp / "shards")]) == 2
    assert "error:" in capsys.readouterr().err
    assert main([*args, "--device", "tpu-ish"]) == 2
    assert "--device 'tpu-ish'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main([*args, "--device", "cuda"]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err


def test_a_checkpoint_and_shards_in_a_bucket(trained, bucket, capsys):
    """Where a cluster's runs keep them (the session's local S3): the checkpoint is
    fetched from the bucket and scores as it does locally."""
    import pyarrow.fs as pafs

    tmp, result = trained
    s3, root = pafs.FileSystem.from_uri(bucket)
    for local, remote in ((tmp / "runs" / "evaljob" / "epoch-0002", "runs/evaljob/epoch-0002"),
                          (tmp / "shards", "shards")):  # fmt: skip
        pafs.copy_files(str(local), f"{root}/{remote}", destination_filesystem=s3)
    checkpoint = f"{bucket}/runs/evaljob/epoch-0002"
    assert main(["--model", checkpoint, "--shards", f"{bucket}/shards", "--no-log", "--device", "cpu"]) == 0
    assert f"VOC07 mAP@0.5 {result['val/mAP']:.3f}" in capsys.readouterr().out

    assert main(["--model", f"{bucket}/runs/evaljob/nothing", "--shards", f"{bucket}/shards", "--no-log"]) == 2
    assert f"error: {bucket}/runs/evaljob/nothing: " in capsys.readouterr().err  # named, not a temporary folder
