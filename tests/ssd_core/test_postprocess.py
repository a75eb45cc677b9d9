import pytest
import torch
from torchvision.models.detection import ssd300_vgg16 as tv_ssd300
from torchvision.ops import box_iou, nms

from ssd_core import postprocess
from ssd_core.boxes import cxcywh_to_xyxy
from ssd_core.postprocess import detect, rank_within_groups
from ssd_core.priors import make_priors, ssd300_prior_spec

PRIORS = make_priors(ssd300_prior_spec())


def trained_like_outputs(batch: int, num_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mostly confident background, a few priors confident in some class."""
    g = torch.Generator().manual_seed(seed)
    conf = torch.randn(batch, 8732, num_classes, generator=g)
    conf[..., 0] += 6.0
    hits = torch.randint(0, 8732, (batch, 60), generator=g)
    classes = torch.randint(1, num_classes, (batch, 60), generator=g)
    for b in range(batch):
        conf[b, hits[b], classes[b]] += 10.0 + torch.rand(60, generator=g) * 3
    loc = torch.randn(batch, 8732, 4, generator=g) * 0.5
    return loc, conf


def test_rank_within_groups_equals_loop():
    g = torch.Generator().manual_seed(0)
    groups = torch.randint(0, 5, (200,), generator=g)
    scores = torch.rand(200, generator=g)
    rank = rank_within_groups(groups, scores)
    for i in range(200):
        same = (groups == groups[i]) & (scores > scores[i])
        assert rank[i] == same.sum()


@pytest.mark.parametrize("seed", [0, 1])
def test_same_detections_as_torchvision(seed):
    loc, conf = trained_like_outputs(4, 21, seed)
    tv = tv_ssd300(weights=None, weights_backbone=None, num_classes=21)
    anchors = cxcywh_to_xyxy(PRIORS) * 300
    ref = tv.postprocess_detections({"bbox_regression": loc, "cls_logits": conf}, [anchors] * 4, [(300, 300)] * 4)
    ours = detect(loc, conf, PRIORS, [(300, 300)] * 4)
    for o, r in zip(ours, ref):
        assert len(o["boxes"]) == len(r["boxes"]) > 0
        torch.testing.assert_close(o["boxes"], r["boxes"], atol=1e-3, rtol=0)
        torch.testing.assert_close(o["scores"], r["scores"])
        assert torch.equal(o["labels"], r["labels"])


def test_pixel_coordinates_and_clipping():
    loc = torch.zeros(1, 8732, 4)
    conf = torch.full((1, 8732, 3), -10.0)
    conf[0, :, 0] = 10.0
    index = 8731  # a prior of the 1x1 map wider than the image
    conf[0, index, 2] = 10.0
    out = detect(loc, conf, PRIORS, [(200, 400)])[0]
    assert out["labels"].tolist() == [2]
    x1, y1, x2, y2 = out["boxes"][0].tolist()
    assert x1 >= 0 and y1 >= 0 and x2 <= 400 and y2 <= 200
    expected = cxcywh_to_xyxy(PRIORS[index]).clamp(0, 1) * torch.tensor([400, 200, 400, 200])
    torch.testing.assert_close(out["boxes"][0], expected)


def test_thresholds_are_parameters():
    loc, conf = trained_like_outputs(2, 6, 3)
    full = detect(loc, conf, PRIORS, [(300, 300)] * 2)
    strict = detect(loc, conf, PRIORS, [(300, 300)] * 2, score_threshold=0.9, max_detections=5)
    for f, s in zip(full, strict):
        assert len(s["scores"]) <= 5 and (s["scores"] > 0.9).all()
        assert len(f["scores"]) >= len(s["scores"])
    few = detect(loc, conf, PRIORS, [(300, 300)] * 2, top_k=1, nms_threshold=1.0)
    for f in few:  # one candidate per class survives top_k=1
        assert len(f["labels"]) == len(f["labels"].unique())


def test_nms_leaves_no_same_class_overlap():
    loc, conf = trained_like_outputs(1, 4, 5)
    out = detect(loc, conf, PRIORS, [(300, 300)], nms_threshold=0.3)[0]
    for c in out["labels"].unique():
        boxes = out["boxes"][out["labels"] == c]
        iou = box_iou(boxes, boxes).fill_diagonal_(0)
        assert (iou <= 0.3 + 1e-6).all()
        assert len(nms(boxes, out["scores"][out["labels"] == c], 0.3)) == len(boxes)


def test_nothing_above_threshold_gives_empty_tensors():
    conf = torch.zeros(2, 8732, 3)
    conf[..., 0] = 20.0
    out = detect(torch.zeros(2, 8732, 4), conf, PRIORS, [(10, 10), (20, 20)])
    assert [o["boxes"].shape for o in out] == [(0, 4), (0, 4)]
    assert out[0]["labels"].dtype == torch.int64


def test_first_pass_short_of_survivors_reruns_the_image(monkeypatch):
    # Image 0: its 300 best candidates are one object seen by many priors (NMS keeps one),
    # so a first pass over its best 2 * max_detections comes up short and must rerun.
    loc, conf = trained_like_outputs(2, 4, 9)
    conf[0, :, 0] = 0.0
    conf[0, :, 1:] = -5.0
    same_object = torch.arange(0, 1200, 4)  # the s_k square box of 300 cells of the 38 map
    conf[0, same_object, 1] = 8.0 + torch.linspace(0, 1, 300)
    loc[0, same_object] = 0.0
    centre = PRIORS[same_object[0]].clone()
    loc[0, same_object, :2] = (centre[:2] - PRIORS[same_object, :2]) / (0.1 * PRIORS[same_object, 2:])
    conf[0, 4000:4300, 2] = 6.0 + torch.linspace(0, 0.5, 300)  # 300 lower, distinct scores (no ties)
    tv = tv_ssd300(weights=None, weights_backbone=None, num_classes=4)
    tv.detections_per_img = 100
    anchors = cxcywh_to_xyxy(PRIORS) * 300
    ref = tv.postprocess_detections({"bbox_regression": loc, "cls_logits": conf}, [anchors] * 2, [(300, 300)] * 2)
    calls = []
    original = postprocess.grouped_nms
    monkeypatch.setattr(postprocess, "grouped_nms", lambda *a: calls.append(len(a[0])) or original(*a))
    ours = detect(loc, conf, PRIORS, [(300, 300)] * 2, max_detections=100)
    assert len(calls) == 2 and calls[0] == 400  # both images' best 200, then image 0 again
    # one survivor of the 200-candidate first pass, so the image was rerun to find the rest
    assert (ours[0]["labels"] == 1).sum() == 1 and (ours[0]["labels"] == 2).sum() > 1
    for o, r in zip(ours, ref):
        assert torch.equal(o["labels"], r["labels"])
        torch.testing.assert_close(o["boxes"], r["boxes"], atol=1e-3, rtol=0)


def test_fp64_and_fp16_inputs():
    loc, conf = trained_like_outputs(1, 4, 11)
    ref = detect(loc, conf, PRIORS, [(300, 300)])[0]
    out64 = detect(loc.double(), conf.double(), PRIORS.double(), [(300, 300)])[0]
    assert out64["boxes"].dtype == torch.float64
    torch.testing.assert_close(out64["boxes"].float(), ref["boxes"], atol=1e-3, rtol=0)
    out16 = detect(loc.half(), conf.half(), PRIORS, [(300, 300)])[0]
    assert out16["boxes"].dtype == torch.float32 and len(out16["boxes"]) > 0
