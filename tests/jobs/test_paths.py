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
