"""Evaluate a trained model on a split of prepared shards: what ``jobs/evaluate.py`` runs."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch

from pipeline.builders import build_model
from pipeline.checkpoint import fetched_checkpoint, load_checkpoint, read_meta
from pipeline.config import EvalConfig, ExperimentConfig, TrackingConfig, from_dict
from pipeline.engine import predict
from pipeline.model_store import load_model
from pipeline.samples import decode
from pipeline.tracking import Tracker
from ssd_core.data.shards import check_shards, read_manifest, read_shards
from ssd_core.metrics import ap_table, evaluate_coco, evaluate_voc
from ssd_core.models.ssd import SSD

CHUNK = 256  # images decoded and detected at a time


def load_any(source: str) -> tuple[SSD, tuple[str, ...]]:
    """A model and its class names from a training checkpoint folder (``runs/<run>/epoch-N``,
    local or in a bucket), a saved model folder, or an MLflow model URI
    (``models:/name@alias``, ``runs:/id/model``)."""
    model, _, class_names = load_any_with_config(source)
    return model, class_names


def load_any_with_config(source: str) -> tuple[SSD, ExperimentConfig, tuple[str, ...]]:
    """:func:`load_any`, with the config the model was trained with."""
    with fetched_checkpoint(source) as path:
        if path is not None:
            meta = read_meta(path)
            config = from_dict(meta["config"])
            class_names = tuple(meta["class_names"])
            model = build_model(config.model, len(class_names) + 1)
            load_checkpoint(path, model)
            return model.eval(), config, class_names
    return load_model(source)


def evaluate_split(
    model: SSD, class_names: tuple[str, ...], shards: str, split: str, cfg: EvalConfig,
    log: Callable[[str], None] = print, progress: Callable[[int, int], None] | None = None,
    device: torch.device | str = "cpu",
) -> tuple[dict[str, float], str]:  # fmt: skip
    """VOC07 mAP@0.5 (difficult and crowd ignored), per-class AP and the 12 COCO numbers,
    and the per-class AP table as text. Images are decoded and detected ``CHUNK`` at a
    time (a VOC or COCO test set decoded at once would hold GBs), with ``progress(done,
    total)`` after each chunk. ``device``: where the model is."""
    if tuple(read_manifest(shards)["class_names"]) != class_names:
        raise ValueError(f"{shards}: the shards' classes differ from the model's {class_names}")
    total = check_shards(shards, split)
    detections: list[dict] = []
    truths: list[dict] = []
    records = read_shards(shards, split)
    while chunk := list(itertools.islice(records, CHUNK)):
        detections += predict(model, [decode(r) for r in chunk], cfg, device=device)
        truths += [{"boxes": r.boxes, "labels": r.labels, "difficult": r.difficult | r.iscrowd, "iscrowd": r.iscrowd}
                   for r in chunk]  # fmt: skip
        if progress is not None:
            progress(len(detections), total)
    voc = evaluate_voc(detections, truths)
    coco = evaluate_coco(detections, truths)
    table = ap_table(voc["AP"], class_names, voc["mAP"]).rstrip()
    log(table)
    log("COCO: " + ", ".join(f"{k} {v:.3f}" for k, v in coco.items()))
    metrics = {"voc/mAP": voc["mAP"], **{f"voc/AP/{class_names[k - 1]}": v for k, v in voc["AP"].items()},
               **{f"coco/{k}": v for k, v in coco.items()}}  # fmt: skip
    return metrics, table


def log_evaluation(
    tracking: TrackingConfig, config: ExperimentConfig, source: str, shards: str, split: str,
    metrics: dict[str, float], table: str, log: Callable[[str], None] = print,
) -> str | None:  # fmt: skip
    """Log an evaluation as its own MLflow run in the model's experiment (its config's
    name), beside the runs that trained it: the model's config as params, what was
    evaluated as tags, the metrics and the AP table. The run id, or None when tracking
    failed (it warns; the metrics were printed anyway)."""
    tracker = Tracker(tracking, config.name, log, work="evaluation")
    tags = {"evaluated.model": source, "evaluated.shards": shards, "evaluated.split": split}
    if tracker.start(config, tags=tags, run_name=f"evaluate-{split}") is None:
        return None
    tracker.log_metrics(metrics, step=0)
    tracker.log_text(table + "\n", "ap_table.md")
    tracker.end()
    return tracker.run_id
