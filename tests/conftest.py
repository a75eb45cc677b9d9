import pytest


@pytest.fixture(scope="session")
def s3_endpoint():
    """A local S3 (moto's server) for the whole session, and the AWS variables that
    pyarrow, boto3 and MLflow read pointing at it, set before Ray starts so that its
    workers inherit them: the bucket paths a cluster uses (``s3://`` shards, runs,
    checkpoints, images) run here against it, and no test can reach a real account."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as env:
        for name, value in {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "test",
                            "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():  # fmt: skip
            env.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            env.delenv(name, raising=False)
        yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_endpoint) -> str:
    """A new, empty bucket on the session's local S3: ``s3://<name>``."""
    import uuid

    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture
def tracking_server(bucket, tmp_path):
    """An MLflow tracking server as ``cluster.yaml`` runs one on the head: its store a
    database file, its artifacts served from a bucket (``--artifacts-destination``) on the
    session's local S3; its URI, ``http://127.0.0.1:<port>``."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
               "--artifacts-destination", f"{bucket}/mlflow-artifacts"]  # fmt: skip
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
    try:
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=1)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    started = (tmp_path / "server.log").read_text()
                    raise RuntimeError(f"mlflow server did not start: {started}") from None
                time.sleep(0.3)
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # its workers too
        server.wait(timeout=30)
        log.close()


@pytest.fixture(scope="session")
def ray_cluster(s3_endpoint):
    """One local Ray for the whole session, with logical CPUs to spare: Ray Train reserves
    its workers' CPUs before Ray Data gets any, and on a 2-core machine a pipeline with
    only the physical count would wait forever. Its workers see the session's local S3
    (:func:`s3_endpoint`). Stops only a cluster it started."""
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
