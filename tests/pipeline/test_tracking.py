import pytest
import torch
from mlflow import MlflowClient

from pipeline.config import TrackingConfig, load_config
from pipeline.local_train import train_locally
from pipeline.model_store import ModelLoadError, load_model, load_model_dir, save_model
from pipeline.tracking import artifact_location, flatten


def tiny_config(tmp_path, *extra):
    return load_config(None, [
        f"data.root={tmp_path / 'shapes'}", f"data.shards={tmp_path / 'shards'}", "data.augment=flip",
        "data.num_train=64", "data.num_val=16", "data.shapes_image_size=96",
        "train.epochs=2", "train.batch_size=16", "train.warmup_iters=2", "train.num_threads=2",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"tracking.artifacts={tmp_path / 'artifacts'}",
        "tracking.model_name=ssd-test", f"train.checkpoint_dir={tmp_path / 'runs'}", *extra,
    ])  # fmt: skip


def test_run_params_metrics_artifacts_and_registered_model(tmp_path):
    result = train_locally(tiny_config(tmp_path), log=lambda line: None)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.lr"] == "0.05" and run.data.params["model.name"] == "light"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2]
    assert "val/mAP" in run.data.metrics and "val/AP/circle" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "val_ap.md", "pr_curves"} <= artifacts
    assert any(a.path.endswith(".png") for a in client.list_artifacts(run.info.run_id, "pr_curves"))

    assert result["model_uri"] == "models:/ssd-test/1"
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    loaded, config, class_names = load_model("models:/ssd-test/1")
    assert class_names[0] == "circle" and config.name == "shapes-light"
    x = torch.randn(2, 3, 128, 128)
    trained = result["model"].eval()
    with torch.no_grad():
        for a, b in zip(loaded(x), trained(x.contiguous(memory_format=torch.channels_last))):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_tracking_failure_warns_and_training_goes_on(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")  # a store beneath a file cannot be created
    cfg = tiny_config(tmp_path, f"tracking.uri=sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}")
    lines = []
    with pytest.warns(UserWarning, match="MLflow tracking failed"):
        result = train_locally(cfg, log=lines.append)
    assert result["mlflow_run_id"] is None and len(result["reports"]) == 2
    assert any("training goes on without tracking" in line for line in lines)


def test_model_files_cannot_run_code(tmp_path):
    from ssd_core.models import ssd_light

    cfg = load_config(None, ["model.name=light"])
    model = ssd_light(6)
    save_model(tmp_path / "m", None, model, cfg, ("a", "b", "c", "d", "e"))
    loaded, _, _ = load_model_dir(tmp_path / "m")
    torch.testing.assert_close(loaded.state_dict()["head.conf.0.3.bias"], model.state_dict()["head.conf.0.3.bias"])

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    torch.save({"x": Payload()}, tmp_path / "m" / "weights.pt")
    with pytest.raises(ModelLoadError, match="not a matching plain state dict"):
        load_model_dir(tmp_path / "m")
    with pytest.raises(ModelLoadError, match="no ssd.json"):
        load_model_dir(tmp_path)


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}) == {"a.b": "1", "a.c.d": "[1, 2]", "e": "None"}


@pytest.mark.parametrize(
    ("uri", "artifacts", "want"),
    [
        ("sqlite:////data/mlruns/mlflow.db", None, "file:///data/mlruns/artifacts"),  # beside the store
        ("http://head:5000", None, None),  # the server's own: it serves them from its bucket
        ("http://head:5000", "s3://bucket/artifacts", "s3://bucket/artifacts"),
        ("sqlite:////data/mlflow.db", "/elsewhere/artifacts", "file:///elsewhere/artifacts"),
    ],
)
def test_artifact_location_of_a_new_experiment(uri, artifacts, want):
    assert artifact_location(TrackingConfig(uri=uri, artifacts=artifacts)) == want
