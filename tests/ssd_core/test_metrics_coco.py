import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ssd_core.metrics import COCO_STATS, evaluate_coco


def pycocotools_direct(dets, gts, tmp_path):
    """pycocotools on JSON files, the way its own examples run it."""
    images, anns, results = [], [], []
    for i, gt in enumerate(gts):
        images.append({"id": i, "width": 200, "height": 200})
        for box, label, crowd in zip(gt["boxes"], gt["labels"], gt["iscrowd"]):
            w, h = box[2] - box[0], box[3] - box[1]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": int(label),
                    "bbox": [box[0], box[1], w, h],
                    "area": w * h,
                    "iscrowd": int(crowd),
                }
            )
        for box, score, label in zip(dets[i]["boxes"], dets[i]["scores"], dets[i]["labels"]):
            results.append(
                {
                    "image_id": i,
                    "category_id": int(label),
                    "score": float(score),
                    "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                }
            )
    cats = sorted({int(a["category_id"]) for a in anns})
    (tmp_path / "gt.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": [{"id": c} for c in cats]})
    )
    (tmp_path / "dt.json").write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(tmp_path / "gt.json"))
        dt = gt.loadRes(str(tmp_path / "dt.json"))
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return dict(zip(COCO_STATS, ev.stats))


@pytest.mark.parametrize("seed", range(4))
def test_equals_pycocotools_on_files(seed, tmp_path):
    rng = np.random.default_rng(seed)
    gts, dets = [], []
    for _ in range(8):
        n = int(rng.integers(1, 6))
        xy = rng.uniform(0, 150, (n, 2))
        boxes = np.c_[xy, xy + rng.uniform(4, 50, (n, 2))].round(2)
        gts.append(
            {
                "boxes": boxes.tolist(),
                "labels": rng.integers(1, 4, n).tolist(),
                "iscrowd": (rng.random(n) < 0.15).tolist(),
            }
        )
        m = int(rng.integers(0, 8))
        picks = boxes[rng.integers(0, n, m)] + rng.normal(0, 3, (m, 4))
        picks[:, 2:] = np.maximum(picks[:, 2:], picks[:, :2] + 1)
        dets.append(
            {
                "boxes": picks.round(2).tolist(),
                "scores": rng.random(m).round(4).tolist(),
                "labels": rng.integers(1, 4, m).tolist(),
            }
        )
    ours = evaluate_coco(dets, gts)
    reference = pycocotools_direct(dets, gts, tmp_path)
    assert ours == pytest.approx(reference)


def test_perfect_and_empty():
    gts = [{"boxes": [[10, 10, 60, 70]], "labels": [1]}]
    assert evaluate_coco([{"boxes": [[10, 10, 60, 70]], "scores": [0.9], "labels": [1]}], gts)["AP"] == pytest.approx(
        1.0
    )
    none = evaluate_coco([{"boxes": np.zeros((0, 4)), "scores": [], "labels": []}], gts)
    assert none["AP"] == 0.0 and set(none) == set(COCO_STATS)
