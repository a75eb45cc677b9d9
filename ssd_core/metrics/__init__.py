"""Detection metrics: Pascal VOC AP (COCO AP through pycocotools comes with the data issue)."""

from ssd_core.metrics.voc import average_precision, evaluate_voc, precision_recall

__all__ = ["average_precision", "evaluate_voc", "precision_recall"]
