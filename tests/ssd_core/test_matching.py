import pytest
import torch
from torchvision.models.detection import _utils as det_utils
from torchvision.ops import box_iou

from ssd_core.boxes import cxcywh_to_xyxy, decode, encode, xyxy_to_cxcywh
from ssd_core.matching import TargetEncoder, encode_targets, match_priors
from ssd_core.priors import make_priors, ssd300_prior_spec, ssd512_prior_spec

PRIORS = make_priors(ssd300_prior_spec())


def caffe_bipartite_loop(iou: torch.Tensor, threshold: float) -> list[int]:
    """The Caffe MatchBBox rule written as plainly as possible, for reference."""
    n, p = iou.shape
    matches = [-1] * p
    for j in range(p):
        best = max(range(n), key=lambda i: iou[i, j])
        if iou[best, j] >= threshold:
            matches[j] = best
    free_boxes, free_priors = set(range(n)), set(range(p))
    while free_boxes and free_priors:
        i, j = max(((i, j) for i in free_boxes for j in free_priors), key=lambda ij: (iou[ij], -ij[0], -ij[1]))
        matches[j] = i
        free_boxes.discard(i)
        free_priors.discard(j)
    return matches


def test_match_on_paper():
    # Priors 0..3, boxes a and b. a's best prior is 0 (0.9); b's best is also 0 (0.8), so
    # b falls back to prior 1 (0.6). Prior 2 reaches 0.5 with a. Prior 3 stays background.
    iou = torch.tensor([[0.9, 0.1, 0.5, 0.2], [0.8, 0.6, 0.3, 0.1]])
    assert match_priors(iou).tolist() == [0, 1, 0, -1]


def test_forced_match_beats_threshold():
    # Box 1's only prior (IoU 0.3) is taken from box 0's threshold match.
    iou = torch.tensor([[0.9, 0.6], [0.1, 0.3]])
    assert match_priors(iou).tolist() == [0, 1]


@pytest.mark.parametrize("seed", range(12))
def test_match_equals_plain_loop(seed):
    g = torch.Generator().manual_seed(seed)
    n, p = int(torch.randint(1, 7, (1,), generator=g)), int(torch.randint(1, 25, (1,), generator=g))
    iou = torch.rand(n, p, generator=g)
    if seed % 3 == 0:  # collisions: every box likes prior 0 best
        iou[:, 0] = 1.0 - torch.arange(n) * 0.01
    assert match_priors(iou.clone(), 0.5).tolist() == caffe_bipartite_loop(iou, 0.5)


def test_encode_decode_match_torchvision_box_coder():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=g) * 0.6
    boxes = torch.cat((xy, xy + 0.05 + torch.rand(50, 2, generator=g) * 0.3), dim=1)
    priors = PRIORS[torch.randperm(PRIORS.shape[0], generator=g)[:50]]
    coder = det_utils.BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    ours = encode(xyxy_to_cxcywh(boxes), priors)
    torch.testing.assert_close(ours, coder.encode_single(boxes, cxcywh_to_xyxy(priors)))
    torch.testing.assert_close(decode(ours, priors), boxes, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        decode(ours, priors), coder.decode_single(ours, cxcywh_to_xyxy(priors)), atol=1e-5, rtol=0
    )


def torchvision_targets(boxes, labels, priors):
    matcher = det_utils.SSDMatcher(0.5)
    matched = matcher(box_iou(boxes, cxcywh_to_xyxy(priors)))
    fg = matched >= 0
    target_labels = torch.zeros(priors.shape[0], dtype=torch.int64)
    target_labels[fg] = labels[matched[fg]]
    coder = det_utils.BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    loc = coder.encode_single(boxes[matched.clamp(min=0)], cxcywh_to_xyxy(priors))
    return loc, target_labels, fg


def test_equals_torchvision_when_no_boxes_share_a_best_prior():
    boxes = torch.tensor([[0.1, 0.1, 0.3, 0.35], [0.5, 0.4, 0.9, 0.95], [0.05, 0.6, 0.2, 0.7]])
    labels = torch.tensor([3, 1, 7])
    loc, lab = encode_targets(boxes, labels, PRIORS)
    ref_loc, ref_lab, fg = torchvision_targets(boxes, labels, PRIORS)
    assert torch.equal(lab, ref_lab)
    torch.testing.assert_close(loc[fg], ref_loc[fg])
    assert (loc[~fg] == 0).all()


def test_keeps_both_boxes_that_share_a_best_prior():
    # Two nearly identical small boxes: torchvision forces both onto the same prior and one
    # ends with no positive; the bipartite match gives each its own prior.
    boxes = torch.tensor([[0.40, 0.40, 0.44, 0.44], [0.401, 0.401, 0.441, 0.441]])
    labels = torch.tensor([1, 2])
    _, lab = encode_targets(boxes, labels, PRIORS)
    _, ref_lab, _ = torchvision_targets(boxes, labels, PRIORS)
    assert set(ref_lab.unique().tolist()) != {0, 1, 2}  # torchvision loses one of them
    assert set(lab.unique().tolist()) == {0, 1, 2}


def test_no_boxes_is_all_background():
    loc, lab = encode_targets(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), PRIORS)
    assert loc.shape == (8732, 4) and (loc == 0).all() and (lab == 0).all()


def test_tiny_box_still_gets_a_prior():
    loc, lab = encode_targets(torch.tensor([[0.5, 0.5, 0.505, 0.506]]), torch.tensor([4]), PRIORS)
    assert (lab == 4).sum() == 1
    assert torch.isfinite(loc).all()


def test_boxes_touching_the_border():
    boxes = torch.tensor([[0.0, 0.0, 0.3, 0.2], [0.7, 0.6, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    loc, lab = encode_targets(boxes, torch.tensor([1, 2, 3]), PRIORS)
    assert {1, 2, 3} <= set(lab.tolist()) and torch.isfinite(loc).all()
    positive = lab > 0
    recovered = decode(loc[positive], PRIORS[positive])
    assert recovered.min() >= -1e-5 and recovered.max() <= 1 + 1e-5


def test_float64():
    priors = PRIORS.double()
    loc, lab = encode_targets(torch.tensor([[0.2, 0.2, 0.6, 0.7]], dtype=torch.float64), torch.tensor([1]), priors)
    assert loc.dtype == torch.float64 and (lab == 1).any()
    positive = lab > 0
    torch.testing.assert_close(
        decode(loc[positive], priors[positive])[0], torch.tensor([0.2, 0.2, 0.6, 0.7], dtype=torch.float64)
    )


def random_images(seed: int, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Boxes from tiny to whole-image, some near-duplicates, some images empty."""
    g = torch.Generator().manual_seed(seed)
    images = []
    for i in range(count):
        n = 0 if i % 17 == 0 else int(torch.randint(1, 25, (1,), generator=g))
        wh = torch.rand(n, 2, generator=g) ** 2 * 0.9 + 0.003
        xy = torch.rand(n, 2, generator=g) * (1 - wh)
        boxes = torch.cat((xy, xy + wh), 1)
        if i % 10 == 1 and n > 1:
            boxes[1:] = boxes[0] + torch.rand(n - 1, 4, generator=g) * 0.01
        # Inside the image with positive size, as the datasets guarantee.
        boxes[:, :2] = boxes[:, :2].clamp(0, 0.997)
        boxes[:, 2:] = torch.maximum(boxes[:, 2:].clamp(max=1.0), boxes[:, :2] + 0.002)
        images.append((boxes, torch.randint(1, 10, (n,), generator=g)))
    return images


@pytest.mark.parametrize(
    "spec",
    [ssd300_prior_spec(), ssd300_prior_spec(clip="box"), ssd300_prior_spec(clip="size"), ssd512_prior_spec()],
    ids=["ssd300", "ssd300-clip-box", "ssd300-clip-size", "ssd512"],
)
def test_sparse_search_equals_dense(spec):
    priors = make_priors(spec)
    dense, sparse = TargetEncoder(priors), TargetEncoder(priors, prior_spec=spec)
    seed = ["none", "box", "size"].index(spec.clip) + len(spec.feature_sizes)
    for boxes, labels in random_images(seed, 150):
        loc_d, lab_d = dense(boxes, labels)
        loc_s, lab_s = sparse(boxes, labels)
        assert torch.equal(lab_d, lab_s)
        torch.testing.assert_close(loc_d, loc_s)


def test_batch_equals_one_by_one():
    spec = ssd300_prior_spec()
    encoder = TargetEncoder(make_priors(spec), prior_spec=spec)
    images = random_images(7, 40)
    loc, labels = encoder.encode_batch([b for b, _ in images], [lab for _, lab in images])
    assert loc.shape == (40, 8732, 4) and labels.shape == (40, 8732)
    for i, (boxes, lab) in enumerate(images):
        one_loc, one_lab = encoder(boxes, lab)
        assert torch.equal(labels[i], one_lab) and torch.equal(loc[i], one_loc)


def test_spec_must_match_priors():
    with pytest.raises(ValueError, match="8732 priors"):
        TargetEncoder(make_priors(ssd512_prior_spec()), prior_spec=ssd300_prior_spec())
