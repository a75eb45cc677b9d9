import pytest


@pytest.fixture(autouse=True)
def run_in_tmp_path(tmp_path, monkeypatch):
    """Pipeline tests run in their own folder: MLflow creates its default experiment's
    artifact folder relative to the working directory, and nothing may land in the repo."""
    monkeypatch.chdir(tmp_path)
