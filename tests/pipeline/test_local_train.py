import math

import pytest

from pipeline.builders import build_model
from pipeline.config import ModelConfig, load_config
from pipeline.local_train import train_locally


@pytest.mark.parametrize("augment", ["ssd", "flip"])
def test_tiny_run_trains_and_evaluates(tmp_path, augment):
    """Through the whole local data path: shapes -> JPEG + COCO JSON -> shards -> decode ->
    augmentation -> encoding -> training -> VOC mAP."""
    cfg = load_config(
        None,
        [
            f"data.root={tmp_path / 'shapes'}",
            f"data.shards={tmp_path / 'shards'}",
            f"data.augment={augment}",
            "tracking.enabled=false",
            f"train.checkpoint_dir={tmp_path / 'runs'}",
            "data.num_train=96",
            "data.num_val=16",
            "data.shapes_image_size=96",
            "train.epochs=3",
            "train.batch_size=16",
            "train.warmup_iters=2",
            "train.num_threads=2",
        ],
    )
    lines: list[str] = []
    result = train_locally(cfg, log=lines.append)
    losses = [e["loss"] for e in result["reports"]]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    assert 0.0 <= result["val/mAP"] <= 1.0
    assert any(line.startswith("epoch   3/3") and "img/s" in line for line in lines)
    assert "mAP" in lines[-1]
    assert (tmp_path / "shards" / "manifest.json").is_file()  # the data went through shards


def test_model_scales_from_config():
    model = build_model(ModelConfig(name="light", s_min=0.2, s_max=0.8, first_scale=0.1), num_classes=3)
    assert model.prior_spec.scales == pytest.approx((0.1, 0.2, 0.4, 0.6, 0.8, 1.0))
    with pytest.raises(ValueError, match="unknown model.name"):
        build_model(ModelConfig(name="yolo"), 3)
