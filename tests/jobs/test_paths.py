from pathlib import Path

from jobs.paths import absolute, default_tracking_uri, is_mlflow_uri


def test_local_paths_become_absolute_and_uris_pass(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute("models/best") == str(tmp_path / "models" / "best")
    for uri in ("s3://bucket/x", "models:/name@champion", "runs:/abc/model", None):
        assert absolute(uri) == uri
    assert is_mlflow_uri("models:/n/1") and not is_mlflow_uri("models/n")


def test_default_tracking_uri_is_the_training_jobs_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert default_tracking_uri(None) == f"sqlite:///{Path(tmp_path) / 'mlruns' / 'mlflow.db'}"
    assert default_tracking_uri("http://host:5000") == "http://host:5000"


def test_a_local_tracking_path_is_the_sqlite_file_the_training_job_writes(tmp_path, monkeypatch):
    from pipeline.config import load_config, with_absolute_paths

    monkeypatch.chdir(tmp_path)
    trained = with_absolute_paths(load_config(None, ["tracking.uri=runs/x.db"]), tmp_path).tracking.uri
    assert default_tracking_uri("runs/x.db") == trained == f"sqlite:///{tmp_path / 'runs' / 'x.db'}"
    assert default_tracking_uri("sqlite:////abs/y.db") == "sqlite:////abs/y.db"
