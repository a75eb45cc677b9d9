import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection import ssd300_vgg16 as tv_ssd300
from torchvision.ops import box_iou

from ssd_core.boxes import cxcywh_to_xyxy
from ssd_core.loss import mine_hard_negatives, multibox_loss
from ssd_core.matching import encode_targets, match_priors
from ssd_core.priors import make_priors, ssd300_prior_spec


def test_loss_by_hand():
    # One image, 4 priors, 2 classes. Prior 0 positive (label 1); three negatives.
    conf = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [0.0, 1.0], [1.0, 0.0]]])
    labels = torch.tensor([[1, 0, 0, 0]])
    loc = torch.tensor([[[0.5, 0.0, 2.0, 0.0], [9.0, 9, 9, 9], [9.0, 9, 9, 9], [9.0, 9, 9, 9]]])
    loc_targets = torch.zeros(1, 4, 4)
    out = multibox_loss(loc, conf, loc_targets, labels, alpha=1.0, neg_pos_ratio=2)
    # smooth L1: 0.5 * 0.5^2 + (2 - 0.5) = 0.125 + 1.5
    assert out["loss_loc"].item() == pytest.approx(1.625)
    # positive CE: log 2. Negatives ranked by -log p0: prior 2 (log(1 + e)), prior 3
    # (log(1 + e^-1)), prior 1 (log(1 + e^-2)); the ratio 2 keeps priors 2 and 3.
    expected_cls = math.log(2) + math.log(1 + math.e) + math.log(1 + math.exp(-1))
    assert out["loss_cls"].item() == pytest.approx(expected_cls, rel=1e-6)
    assert out["loss"].item() == pytest.approx(expected_cls + 1.625, rel=1e-6)


def test_mining_counts_and_ranks():
    g = torch.Generator().manual_seed(0)
    bg = torch.rand(3, 100, generator=g)
    positive = torch.zeros(3, 100, dtype=torch.bool)
    positive[0, :5] = True
    positive[2, :40] = True
    chosen = mine_hard_negatives(bg, positive, 3, min_negatives=4)
    assert chosen.sum(1).tolist() == [15, 4, 60]
    assert not (chosen & positive).any()
    for i in range(2):  # every chosen negative beats every unchosen one (image 2 takes all)
        unchosen = ~positive[i] & ~chosen[i]
        assert bg[i][chosen[i]].min() >= bg[i][unchosen].max()


def test_no_positives_is_finite_and_teaches_background():
    conf = torch.randn(2, 50, 5, requires_grad=True)
    out = multibox_loss(torch.randn(2, 50, 4), conf, torch.zeros(2, 50, 4), torch.zeros(2, 50, dtype=torch.long))
    assert torch.isfinite(out["loss"]) and out["loss"] > 0 and out["loss_loc"] == 0
    out["loss"].backward()
    assert (conf.grad[..., 0] != 0).sum() == 2 * 8  # min_negatives per image


def test_all_positive_and_extreme_logits():
    labels = torch.ones(1, 10, dtype=torch.long)
    conf = torch.tensor([[1e4, -1e4]]).repeat(1, 10, 1).requires_grad_()
    out = multibox_loss(torch.full((1, 10, 4), 1e6), conf, torch.zeros(1, 10, 4), labels)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert torch.isfinite(conf.grad).all()


def test_fp16_inputs_compute_in_fp32():
    out = multibox_loss(
        torch.randn(1, 20, 4).half(),
        torch.randn(1, 20, 3).half(),
        torch.zeros(1, 20, 4).half(),
        torch.tensor([[1] + [0] * 19]),
    )
    assert out["loss"].dtype == torch.float32


def test_equals_torchvision_compute_loss():
    torch.manual_seed(0)
    priors = make_priors(ssd300_prior_spec())
    tv = tv_ssd300(weights=None, weights_backbone=None, num_classes=5)
    anchors = cxcywh_to_xyxy(priors) * 300
    targets, loc_targets, labels, matched = [], [], [], []
    for boxes in (
        [[0.1, 0.1, 0.3, 0.35], [0.5, 0.4, 0.9, 0.95]],
        [[0.2, 0.5, 0.6, 0.9]],
    ):
        b = torch.tensor(boxes)
        lab = torch.arange(1, len(boxes) + 1)
        targets.append({"boxes": b * 300, "labels": lab})
        loc_t, lab_t = encode_targets(b, lab, priors)
        loc_targets.append(loc_t)
        labels.append(lab_t)
        matched.append(match_priors(box_iou(b, cxcywh_to_xyxy(priors))))
    loc = torch.randn(2, 8732, 4)
    conf = torch.randn(2, 8732, 5) * 2
    ref = tv.compute_loss(targets, {"bbox_regression": loc, "cls_logits": conf}, [anchors] * 2, matched)
    ours = multibox_loss(loc, conf, torch.stack(loc_targets), torch.stack(labels))
    torch.testing.assert_close(ours["loss_loc"], ref["bbox_regression"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours["loss_cls"], ref["classification"], rtol=1e-4, atol=1e-5)


def test_gradient_reaches_only_selected_priors():
    conf = torch.randn(1, 40, 3, requires_grad=True)
    labels = torch.zeros(1, 40, dtype=torch.long)
    labels[0, :2] = 1
    multibox_loss(torch.randn(1, 40, 4), conf, torch.zeros(1, 40, 4), labels)["loss"].backward()
    touched = (conf.grad.abs().sum(-1) > 0).sum().item()
    assert touched == 2 + 6
    ce = F.cross_entropy(conf[0].detach(), labels[0], reduction="none")
    assert ce[2:][conf.grad[0, 2:].abs().sum(-1) > 0].min() >= ce[2:][conf.grad[0, 2:].abs().sum(-1) == 0].max()


def test_fp64_stays_fp64_and_agrees_with_fp32():
    g = torch.Generator().manual_seed(4)
    loc, conf = torch.randn(2, 30, 4, generator=g), torch.randn(2, 30, 4, generator=g)
    targets, labels = torch.randn(2, 30, 4, generator=g), torch.randint(0, 4, (2, 30), generator=g)
    out64 = multibox_loss(loc.double(), conf.double(), targets.double(), labels)
    out32 = multibox_loss(loc, conf, targets, labels)
    assert out64["loss"].dtype == torch.float64
    torch.testing.assert_close(out64["loss"].float(), out32["loss"])
