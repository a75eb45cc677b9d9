"""What rank 0 records at the end of a run: the evaluation, its artifacts and the model."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import yaml

from pipeline.config import ExperimentConfig, to_dict
from pipeline.tracking import Tracker
from ssd_core.metrics import ap_table, write_detection_grid, write_pr_curves
from ssd_core.models.ssd import SSD


def record_results(
    tracker: Tracker,
    model: SSD,
    cfg: ExperimentConfig,
    class_names: tuple[str, ...],
    val: dict,
    samples: Sequence[tuple[np.ndarray, dict]],
    step: int,
    log: Callable[[str], None] = print,
) -> dict[str, str | None]:
    """Log the final validation (per-class AP, COCO AP, AP table, PR curves, a grid of
    sample detections), the config, and the model (registered); close the MLflow run.

    Returns ``{"mlflow_run_id", "model_uri"}`` (None where tracking is off or failed).
    """
    scores = {"val/mAP": val["mAP"]}
    scores.update({f"val/AP/{class_names[k - 1]}": v for k, v in val["AP"].items()})
    scores.update({f"val/coco/{k}": v for k, v in val.get("coco", {}).items()})
    per_class = ", ".join(f"{class_names[k - 1]} {v:.3f}" for k, v in val["AP"].items())
    log(f"val VOC07 mAP@0.5 {val['mAP']:.3f} on {val['images']} held-out images ({per_class})")
    if "coco" in val:
        log(f"val COCO AP@[.5:.95] {val['coco']['AP']:.3f}, AP50 {val['coco']['AP50']:.3f}")
    tracker.log_metrics(scores, step=step)
    tracker.log_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), "config.yaml")
    tracker.log_text(ap_table(val["AP"], class_names, val["mAP"]), "val_ap.md")
    with tempfile.TemporaryDirectory() as tmp:
        write_pr_curves(val["curves"], val["AP"], class_names, Path(tmp) / "pr_curves")
        tracker.log_artifacts(Path(tmp) / "pr_curves", "pr_curves")
        if samples:
            grid = write_detection_grid([s[0] for s in samples], [s[1] for s in samples], class_names,
                                        Path(tmp) / "val_detections.png")  # fmt: skip
            tracker.log_artifact(grid)
    model_uri = tracker.log_model(model, cfg, class_names)
    tracker.end()
    return {"mlflow_run_id": tracker.run_id, "model_uri": model_uri}
