"""Ray Tune sweeps on the session's local Ray, MLflow in a temporary folder."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import yaml
from mlflow import MlflowClient

from jobs.sweep import main
from pipeline.sweep import load_sweep, run_sweep

pytestmark = pytest.mark.usefixtures("ray_cluster")
REPO = Path(__file__).resolve().parents[2]


def write_sweep(tmp_path: Path, name: str, samples: int, epochs: int = 2, runs: str | None = None, **keys) -> Path:
    experiment = {
        "name": "sweep-exp",
        "data": {"root": str(tmp_path / "shapes"), "shards": str(tmp_path / "shards"), "augment": "flip",
                 "num_train": 64, "num_val": 12, "shapes_image_size": 64, "map_batch_size": 16},
        "train": {"epochs": epochs, "batch_size": 16, "warmup_iters": 2, "num_threads": 1,
                  "checkpoint_dir": runs or str(tmp_path / "runs")},
        "eval": {"sample_images": 2},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "artifacts": str(tmp_path / "artifacts"),
                     "model_name": "sweep-model"},
    }  # fmt: skip
    (tmp_path / "experiment.yaml").write_text(yaml.safe_dump(experiment))
    sweep = {
        "name": name, "experiment": "experiment.yaml", "num_samples": samples, "max_concurrent_trials": 1,
        "grace_period": 2, "space": {"loss.alpha": {"uniform": [0.5, 2.0]}, "train.lr": {"choice": [0.02, 0.05]}},
        **keys,
    }  # fmt: skip
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def children(tmp_path: Path, parent: str) -> list:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sweep-exp")
    return client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")


def test_two_trial_sweep_tracks_children_and_crowns_the_best(tmp_path, capsys, bucket):
    # Its trials' runs and Tune's state in a bucket (the session's local S3), as on a cluster.
    path = write_sweep(tmp_path, "two", samples=2, search="optuna", runs=f"{bucket}/runs")  # random: below
    assert main(["--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "champion: trial" in out and "models:/sweep-model@champion" in out

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sweep-exp")
    parents = client.search_runs([experiment.experiment_id], "attributes.run_name = 'sweep-two'")
    assert len(parents) == 1
    kids = children(tmp_path, parents[0].info.run_id)
    assert len(kids) == 2 and all("loss.alpha" in k.data.params for k in kids)
    best = max(k.data.metrics["val/mAP"] for k in kids)
    champion = client.get_model_version_by_alias("sweep-model", "champion")
    crowned = next(k for k in kids if k.info.run_id == champion.run_id)  # a trial of this sweep ...
    assert crowned.data.metrics["val/mAP"] == best  # ... with the best val mAP (ties: either)
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"sweep_summary.md", "metric_vs_hyperparameters.png", "sweep.yaml"} <= artifacts

    s3, root = pafs.FileSystem.from_uri(f"{bucket}/runs")
    stored = {i.path.removeprefix(f"{root}/") for i in s3.get_file_info(pafs.FileSelector(root, recursive=True))}
    assert "sweeps/two/sweep_state.json" in stored and any(p.startswith("sweeps/two/run_trial_") for p in stored)
    assert {k.info.run_name for k in kids} <= {p.split("/")[0] for p in stored}  # each trial's checkpoints
    assert not (tmp_path / "runs").exists() and main(["--config", str(path)]) == 2  # it exists: --restore


def test_interrupted_sweep_resumes_without_repeating_finished_trials(tmp_path):
    import ray

    path = write_sweep(tmp_path, "resumed", samples=2)
    # The driver joins the session's cluster (as `ray job submit` would), so killing it is
    # a driver dying, not a second Ray competing for the same cores.
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    log = (tmp_path / "driver.log").open("w")
    driver = subprocess.Popen([sys.executable, "-m", "jobs.sweep", "--config", str(path)], cwd=tmp_path, env=env,
                              stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    sweep_dir = tmp_path / "runs" / "sweeps" / "resumed"
    deadline = time.monotonic() + 400
    # Kill the driver once the first trial's final checkpoint exists (its last epoch is done).
    while time.monotonic() < deadline and not any((tmp_path / "runs").glob("*/epoch-0002")):
        if driver.poll() is not None:
            tail = (tmp_path / "driver.log").read_text()[-3000:]
            pytest.fail(f"the sweep ended before it could be interrupted:\n{tail}")
        time.sleep(0.5)
    time.sleep(3)  # let Tune record the finished trial
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert sweep_dir.is_dir()

    assert main(["--config", str(path), "--restore"]) == 0
    parent = (sweep_dir / "sweep_state.json").read_text()
    import json

    kids = children(tmp_path, json.loads(parent)["parent_run_id"])
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    # Both trials, each trained once per epoch: the finished one was not run again.
    assert len({k.info.run_name for k in kids}) == 2
    for kid in kids:
        steps = [m.step for m in client.get_metric_history(kid.info.run_id, "loss")]
        assert len(steps) == len(set(steps)), f"{kid.info.run_name} repeated epochs {steps}"


def test_asha_stops_a_bad_trial_early_and_its_workers_are_released(tmp_path):
    import ray
    from ray.util.state import list_placement_groups

    # A grid runs in order: a learning trial, then one that cannot learn (lr ~ 0). At the
    # first rung (epoch 1) ASHA compares the second's loss with the first's and stops it.
    path = write_sweep(
        tmp_path, "asha", samples=1, epochs=3, metric="loss", mode="min", grace_period=1, reduction_factor=2,
        space={"train.lr": {"grid": [0.05, 1e-9]}},
    )  # fmt: skip
    result = run_sweep(load_sweep(path), base=tmp_path, log=lambda line: None)
    epochs = {r["params"]["train.lr"]: r["epochs"] for r in result["rows"]}
    assert epochs == {0.05: 3, 1e-9: 1}, result["rows"]
    assert result["champion"]["params"] == {"train.lr": 0.05}

    # The stopped trial's Train workers gave their CPUs back (Ray Train's placement group is
    # removed): nothing is left reserved once the sweep is over.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        alive = list_placement_groups(filters=[("state", "=", "CREATED")])
        if not alive and ray.available_resources().get("CPU") == ray.cluster_resources()["CPU"]:
            break
        time.sleep(1)
    assert not alive, alive
    assert ray.available_resources().get("CPU") == ray.cluster_resources()["CPU"]


def test_sweep_config_errors(tmp_path):
    path = write_sweep(tmp_path, "bad", samples=1)
    with pytest.raises(ValueError, match="unknown sweep key num_sample"):
        load_sweep(path, ("num_sample=3",))
    with pytest.raises(ValueError, match="space.loss.alpha must be"):
        load_sweep(path, ("space.loss.alpha={gauss: [1, 2]}",))
    assert load_sweep(path, ("space.loss.alpha={grid: [1, 2]}",)).space["loss.alpha"] == {"grid": [1, 2]}
    with pytest.raises(ValueError, match="only search: random"):
        load_sweep(path, ("space.loss.alpha={grid: [1, 2]}", "search=optuna"))


def test_shipped_sweep_config_gives_valid_trial_configs():
    from pipeline.config import load_config, to_dict
    from pipeline.sweep import trial_config

    sweep = load_sweep(REPO / "configs" / "sweep_shapes.yaml")
    base = to_dict(load_config(sweep.experiment, sweep.overrides))
    values = {"loss.alpha": 1.5, "loss.neg_pos_ratio": 2, "model.s_min": 0.15, "model.s_max": 0.9, "train.lr": 0.05}
    assert set(values) == set(sweep.space)
    cfg = trial_config(base, values, "t1", parent_run_id="p")
    assert (cfg.loss.alpha, cfg.model.s_min, cfg.train.run_name, cfg.tracking.parent_run_id) == (1.5, 0.15, "t1", "p")
    assert cfg.train.checkpoint_every == 1 and cfg.data.num_train == 2000 and cfg.data.root == "data/shapes-2k"
    assert trial_config(base, values, "10845_00000", None).train.run_name == "10845_00000"  # not an int
    # The trial's driver (0.01 CPU) plus its train workers reserve what the experiment says.
    assert cfg.train.cpus_per_worker == 0.99 and base["train"]["cpus_per_worker"] == 1.0
    assert trial_config(base, {"train.lr": 1e-9}, "t2", None).train.lr == 1e-9  # json writes 1e-09
