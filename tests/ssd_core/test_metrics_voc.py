import numpy as np
import pytest

from ssd_core.metrics import evaluate_voc


def devkit_ap(dets, gts, label, use_07=True, thr=0.5):
    """VOC devkit's voc_eval, transcribed plainly (continuous IoU), for reference."""
    recs = []
    npos = 0
    for gt in gts:
        mask = np.asarray(gt["labels"]) == label
        b = np.asarray(gt["boxes"], float).reshape(-1, 4)[mask]
        d = np.asarray(gt.get("difficult", np.zeros(len(mask), bool)))[mask]
        recs.append({"bbox": b, "difficult": d, "det": [False] * len(b)})
        npos += int((~d).sum())
    ids, confs, bbs = [], [], []
    for i, det in enumerate(dets):
        for box, s, lab in zip(det["boxes"], det["scores"], det["labels"]):
            if lab == label:
                ids.append(i)
                confs.append(s)
                bbs.append(box)
    order = np.argsort(-np.asarray(confs), kind="stable")
    tp, fp = [], []
    for k in order:
        r, bb = recs[ids[k]], np.asarray(bbs[k], float)
        ovmax, jmax = -1.0, -1
        for j, g in enumerate(r["bbox"]):
            iw = max(min(bb[2], g[2]) - max(bb[0], g[0]), 0)
            ih = max(min(bb[3], g[3]) - max(bb[1], g[1]), 0)
            inter = iw * ih
            ov = inter / ((bb[2] - bb[0]) * (bb[3] - bb[1]) + (g[2] - g[0]) * (g[3] - g[1]) - inter)
            if ov > ovmax:
                ovmax, jmax = ov, j
        if ovmax >= thr:
            if r["difficult"][jmax]:
                continue
            if not r["det"][jmax]:
                r["det"][jmax] = True
                tp.append(1)
                fp.append(0)
            else:
                tp.append(0)
                fp.append(1)
        else:
            tp.append(0)
            fp.append(1)
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    rec = tp / npos
    prec = tp / np.maximum(tp + fp, np.finfo(float).eps)
    if use_07:
        return np.mean([prec[rec >= t].max() if (rec >= t).any() else 0 for t in np.arange(0, 1.1, 0.1)])
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(len(mpre) - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])


GT = [
    {"boxes": [[10, 10, 50, 50], [60, 60, 90, 90]], "labels": [1, 2]},
    {"boxes": [[0, 0, 20, 30]], "labels": [1]},
]


def test_perfect_detections():
    dets = [{"boxes": g["boxes"], "scores": [0.9] * len(g["labels"]), "labels": g["labels"]} for g in GT]
    assert evaluate_voc(dets, GT) == {"mAP": 1.0, "AP": {1: 1.0, 2: 1.0}}


def test_nothing_found():
    dets = [{"boxes": np.zeros((0, 4)), "scores": [], "labels": []} for _ in GT]
    assert evaluate_voc(dets, GT)["mAP"] == 0.0


def test_duplicates_are_false_positives():
    dets = [
        {
            "boxes": [[10, 10, 50, 50], [11, 11, 50, 50], [60, 60, 90, 90]],
            "scores": [0.9, 0.8, 0.7],
            "labels": [1, 1, 2],
        },
        {"boxes": [[0, 0, 20, 30]], "scores": [0.6], "labels": [1]},
    ]
    result = evaluate_voc(dets, GT, use_07_metric=False)
    # class 1 in score order: TP, FP (duplicate), TP -> precision at full recall is 2/3.
    assert result["AP"][1] == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)
    assert result["AP"][1] == pytest.approx(devkit_ap(dets, GT, 1, use_07=False))


def test_difficult_only_class_is_left_out():
    gts = [{"boxes": [[10, 10, 50, 50], [60, 60, 90, 90]], "labels": [1, 2], "difficult": [False, True]}]
    dets = [{"boxes": [[10, 10, 50, 50], [60, 60, 90, 90]], "scores": [0.9, 0.9], "labels": [1, 2]}]
    result = evaluate_voc(dets, gts)
    assert result["AP"] == {1: 1.0} and result["mAP"] == 1.0


@pytest.mark.parametrize("use_07", [True, False])
@pytest.mark.parametrize("seed", range(5))
def test_random_cases_equal_devkit_loop(seed, use_07):
    rng = np.random.default_rng(seed)
    gts, dets = [], []
    for _ in range(6):
        n = rng.integers(0, 5)
        xy = rng.uniform(0, 80, (n, 2))
        boxes = np.c_[xy, xy + rng.uniform(5, 40, (n, 2))]
        gts.append({"boxes": boxes, "labels": rng.integers(1, 4, n), "difficult": rng.random(n) < 0.2})
        m = rng.integers(0, 8)
        jitter = boxes[rng.integers(0, max(n, 1), m)] if n else rng.uniform(0, 80, (m, 4))
        dboxes = jitter + rng.normal(0, 4, (m, 4)) if n else np.c_[jitter[:, :2], jitter[:, :2] + 10]
        dboxes[:, 2:] = np.maximum(dboxes[:, 2:], dboxes[:, :2] + 1)
        dets.append({"boxes": dboxes, "scores": rng.random(m), "labels": rng.integers(1, 4, m)})
    result = evaluate_voc(dets, gts, use_07_metric=use_07)
    for label, ap in result["AP"].items():
        assert ap == pytest.approx(devkit_ap(dets, gts, label, use_07=use_07))


def test_pr_curve_pngs_and_ap_table(tmp_path):
    from PIL import Image

    from ssd_core.metrics import ap_table, write_pr_curves

    dets = [
        {
            "boxes": [[10, 10, 50, 50], [11, 11, 50, 50], [60, 60, 90, 90]],
            "scores": [0.9, 0.8, 0.7],
            "labels": [1, 1, 2],
        },
        {"boxes": [[0, 0, 20, 30]], "scores": [0.6], "labels": [1]},
    ]
    result = evaluate_voc(dets, GT, curves=True)
    recall, precision = result["curves"][1]
    np.testing.assert_allclose(recall, [0.5, 0.5, 1.0])
    np.testing.assert_allclose(precision, [1.0, 0.5, 2 / 3])
    paths = write_pr_curves(result["curves"], result["AP"], ("cat", "dog/wolf"), tmp_path)
    assert [p.name for p in paths] == ["pr_001_cat.png", "pr_002_dog_wolf.png"]
    assert Image.open(paths[0]).size == (400, 400)
    table = ap_table(result["AP"], ("cat", "dog/wolf"), result["mAP"])
    assert "| cat | " in table and f"**{result['mAP']:.4f}**" in table
