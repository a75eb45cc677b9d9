"""Detection metrics: Pascal VOC AP and COCO AP (through pycocotools)."""

from ssd_core.metrics.coco import COCO_STATS, evaluate_coco
from ssd_core.metrics.report import ap_table, write_detection_grid, write_pr_curves
from ssd_core.metrics.voc import average_precision, evaluate_voc, precision_recall

__all__ = [
    "COCO_STATS",
    "ap_table",
    "average_precision",
    "evaluate_coco",
    "evaluate_voc",
    "precision_recall",
    "write_detection_grid",
    "write_pr_curves",
]
