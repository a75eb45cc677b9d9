from pathlib import Path

import pytest
import torch

from pipeline.config import ExperimentConfig, from_dict, load_config, to_dict


def test_round_trip_through_a_plain_dict():
    cfg = load_config(None, ["train.lr=0.1", "model.scales=[0.1, 0.2, 0.4, 0.6, 0.8, 1.0]"])
    assert from_dict(to_dict(cfg)) == cfg
    assert cfg.model.scales == (0.1, 0.2, 0.4, 0.6, 0.8, 1.0) and cfg.train.lr == 0.1


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("name: exp\ntrain:\n  epochs: 3\n  lr: 0.2\n")
    cfg = load_config(path, ["train.epochs=5"])
    assert (cfg.name, cfg.train.epochs, cfg.train.lr) == ("exp", 5, 0.2)
    assert cfg.loss == ExperimentConfig().loss


def test_exponents_without_a_dot_are_numbers(tmp_path):
    # PyYAML reads `1e-3` as a string (YAML 1.1 wants `1.0e-3`); users write it anyway.
    path = tmp_path / "exp.yaml"
    path.write_text("train:\n  lr: 1e-3\n  weight_decay: 5E-4\n")
    cfg = load_config(path, ["loss.alpha=2e0"])
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.loss.alpha) == (0.001, 0.0005, 2.0)
    with pytest.raises(ValueError, match="train.lr: expected a number"):
        load_config(None, ["train.lr=fast"])


def test_unknown_keys_and_bad_values_are_named(tmp_path):
    with pytest.raises(ValueError, match="train.lrr"):
        load_config(None, ["train.lrr=1"])
    with pytest.raises(ValueError, match="train.epochs"):
        load_config(None, ["train.epochs=many"])
    with pytest.raises(ValueError, match="a.b=value"):
        load_config(None, ["train.epochs"])
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_shipped_config_loads():
    repo = Path(__file__).resolve().parents[2]
    assert load_config(repo / "configs" / "shapes_light.yaml").model.name == "light"


def test_relative_data_paths_become_absolute(tmp_path):
    from pipeline.config import with_absolute_paths

    cfg = load_config(None, ["data.root=data/shapes", "data.shards=s3://bucket/shards"])
    fixed = with_absolute_paths(cfg, tmp_path)
    assert fixed.data.root == str(tmp_path / "data" / "shapes")
    assert fixed.data.shards == "s3://bucket/shards"


@pytest.mark.parametrize("name", ["voc_ssd300", "voc_ssd512", "coco_ssd300", "coco_ssd512"])
def test_paper_configs_load_and_build(name):
    from pipeline.builders import build_model, build_scheduler, scaled_lr

    cfg = load_config(Path(__file__).parents[2] / "configs" / f"{name}.yaml")
    assert cfg.train.use_gpu and cfg.data.source == "shards"
    # The paper's global batch of 32 at lr 1e-3 whatever the number of GPUs.
    assert cfg.train.batch_size * cfg.train.num_workers == 32
    assert scaled_lr(cfg.train, cfg.train.num_workers) == pytest.approx(1e-3)
    model = build_model(cfg.model, num_classes=81 if name.startswith("coco") else 21)
    assert model.priors.shape[0] == (8732 if "300" in name else 24564)
    if name.startswith("coco"):
        assert cfg.eval.coco and model.prior_spec.scales[0] < 0.1
    sched = build_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), cfg.train, 120_000)
    factor = sched.lr_lambdas[0]  # the Caffe steps: 80k and 100k of 120k iterations
    assert [factor(i) for i in (79_999, 80_000, 99_999, 100_000)] == pytest.approx([1.0, 0.1, 0.1, 0.01])
