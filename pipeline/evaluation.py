"""Evaluate a trained model on a split of prepared shards: what ``jobs/evaluate.py`` runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipeline.builders import build_model
from pipeline.checkpoint import META, load_checkpoint, read_meta
from pipeline.config import EvalConfig, from_dict
from pipeline.engine import predict
from pipeline.model_store import load_model
from pipeline.samples import decode
from ssd_core.data.shards import read_manifest, read_shards
from ssd_core.metrics import ap_table, evaluate_coco, evaluate_voc
from ssd_core.models.ssd import SSD


def load_any(source: str) -> tuple[SSD, tuple[str, ...]]:
    """A model and its class names from a training checkpoint folder (``runs/<run>/epoch-N``),
    a saved model folder, or an MLflow model URI (``models:/name@alias``, ``runs:/id/model``)."""
    path = Path(source)
    if (path / META).is_file():
        meta = read_meta(path)
        config = from_dict(meta["config"])
        class_names = tuple(meta["class_names"])
        model = build_model(config.model, len(class_names) + 1)
        load_checkpoint(path, model)
        return model.eval(), class_names
    model, _, class_names = load_model(source)
    return model, class_names


def evaluate_split(
    model: SSD, class_names: tuple[str, ...], shards: str, split: str, cfg: EvalConfig,
    log: Callable[[str], None] = print,
) -> dict[str, float]:  # fmt: skip
    """VOC07 mAP@0.5 (difficult and crowd ignored), per-class AP and the 12 COCO numbers."""
    records = list(read_shards(shards, split))
    if tuple(read_manifest(shards)["class_names"]) != class_names:
        raise ValueError(f"{shards}: the shards' classes differ from the model's {class_names}")
    detections = predict(model, [decode(r) for r in records], cfg)
    truths = [
        {"boxes": r.boxes, "labels": r.labels, "difficult": r.difficult | r.iscrowd, "iscrowd": r.iscrowd}
        for r in records
    ]
    voc = evaluate_voc(detections, truths)
    coco = evaluate_coco(detections, truths)
    log(ap_table(voc["AP"], class_names, voc["mAP"]).rstrip())
    log("COCO: " + ", ".join(f"{k} {v:.3f}" for k, v in coco.items()))
    return {"voc/mAP": voc["mAP"], **{f"voc/AP/{class_names[k - 1]}": v for k, v in voc["AP"].items()},
            **{f"coco/{k}": v for k, v in coco.items()}}  # fmt: skip
