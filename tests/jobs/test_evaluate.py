import pytest

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


def test_checkpoint_folder_and_errors(trained, capsys):
    tmp, result = trained
    assert main(["--model", str(tmp / "runs" / "evaljob" / "epoch-0002"), "--shards", str(tmp / "shards")]) == 0
    assert f"VOC07 mAP@0.5 {result['val/mAP']:.3f}" in capsys.readouterr().out
    assert main(["--model", str(tmp / "nothing-here"), "--shards", str(tmp / "shards")]) == 2
    assert "error:" in capsys.readouterr().err
