import pytest
from mlflow import MlflowClient

from jobs.evaluate import main as evaluate
from jobs.pull_best import main as pull_best
from pipeline.config import load_config
from pipeline.local_train import train_locally


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two finished runs of one experiment, each with a registered model and val/mAP."""
    tmp = tmp_path_factory.mktemp("pull")
    results = []
    for seed, epochs in ((0, 1), (1, 3)):
        cfg = load_config(None, [
            f"data.root={tmp / 'shapes'}", f"data.shards={tmp / 'shards'}", "data.augment=flip",
            "data.num_train=64", "data.num_val=16", f"train.epochs={epochs}", "train.batch_size=16",
            "train.warmup_iters=2", "train.num_threads=2", f"train.seed={seed}", f"train.run_name=run{seed}",
            f"train.checkpoint_dir={tmp / 'runs'}", f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}",
            f"tracking.artifacts={tmp / 'artifacts'}", "tracking.model_name=pull-test", "name=pull-exp",
        ])  # fmt: skip
        results.append(train_locally(cfg, log=lambda line: None))
    return tmp, results


def test_best_by_metric_is_pulled_verified_and_reproduces_its_map(two_runs, capsys, tmp_path):
    tmp, results = two_runs
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    best = max(results, key=lambda r: r["val/mAP"])
    out = tmp_path / "best"
    code = pull_best(["--tracking-uri", uri, "--experiment", "pull-exp", "--out", str(out), "--set-alias", "champion"])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"from run {best['mlflow_run_id']}" in printed and "verified: light" in printed
    assert (out / "weights.pt").is_file() and (out / "ssd.json").is_file()

    # The alias now points at that run's model, and pulling by alias gives it again.
    version = MlflowClient(uri).get_model_version_by_alias("pull-test", "champion")
    assert version.run_id == best["mlflow_run_id"]
    again = ["--tracking-uri", uri, "--name", "pull-test", "--alias", "champion", "--out", str(tmp_path / "a")]
    assert pull_best(again) == 0
    assert f"from run {best['mlflow_run_id']}" in capsys.readouterr().out

    assert evaluate(["--model", str(out), "--shards", str(tmp / "shards")]) == 0
    assert f"VOC07 mAP@0.5 {best['val/mAP']:.3f}" in capsys.readouterr().out


def test_clear_errors(two_runs, capsys, tmp_path):
    tmp, _ = two_runs
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    out = str(tmp_path / "x")
    assert pull_best(["--tracking-uri", uri, "--experiment", "nope", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "no experiment 'nope'" in err and "pull-exp" in err  # it lists what there is
    assert pull_best(["--tracking-uri", uri, "--experiment", "pull-exp", "--metric", "val/none", "--out", out]) == 2
    assert "has the metric 'val/none'" in capsys.readouterr().err
    assert pull_best(["--tracking-uri", uri, "--name", "pull-test", "--alias", "nobody", "--out", out]) == 2
    assert "no alias 'nobody'" in capsys.readouterr().err
    assert pull_best(["--tracking-uri", "http://127.0.0.1:9", "--experiment", "pull-exp", "--out", out]) == 2
    assert "cannot be reached" in capsys.readouterr().err
    assert pull_best(["--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}", "--experiment", "e", "--out", out]) == 2
    assert "no MLflow database" in capsys.readouterr().err
