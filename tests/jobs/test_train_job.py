from jobs.train import main


def test_bad_override_is_a_clear_error(capsys):
    assert main(["--set", "train.epochz=3"]) == 2
    assert "train.epochz" in capsys.readouterr().err


def test_missing_config_file(capsys, tmp_path):
    assert main(["--config", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml" in capsys.readouterr().err


def test_trains_on_ray_and_registers_the_model(tmp_path, capsys, ray_cluster, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'env.db'}")
    args = [
        "--set", "data.num_train=64", "--set", "data.num_val=16", "--set", "data.shapes_image_size=64",
        "--set", "train.epochs=1", "--set", "train.batch_size=16", "--set", "train.num_threads=1",
        "--set", "data.augment=flip", "--set", "tracking.model_name=job-test",
    ]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "final val mAP@0.5 (VOC07):" in out and "models:/job-test/1" in out
    assert f"--backend-store-uri sqlite:///{tmp_path / 'env.db'}" in out  # MLFLOW_TRACKING_URI is honoured
    assert (tmp_path / "data" / "shards" / "shapes" / "manifest.json").is_file()  # relative to where it ran
