import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for the whole session, with logical CPUs to spare: Ray Train reserves
    its workers' CPUs before Ray Data gets any, and on a 2-core machine a pipeline with
    only the physical count would wait forever. Stops only a cluster it started."""
    import ray

    from pipeline.ray_runtime import connect

    started = connect(address="local", num_cpus=8)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(autouse=True)
def no_ambient_tracking_uri(monkeypatch):
    """Jobs honour MLFLOW_TRACKING_URI, and mlflow.set_tracking_uri() exports it: without
    this, one test's store leaks into the next test's job."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "unset")  # records the original, restored afterwards
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
