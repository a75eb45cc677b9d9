"""ssd_core against torchvision, one process, CPU.

    python -m benchmarks.core [--quick]

Each line prints our time, the peer's (torchvision) from the same run, and the speed
ratio last (peer time / ours). Targets from issue 2 are printed beside the ratio.
"""

from __future__ import annotations

import argparse

import torch
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection import ssd300_vgg16 as tv_ssd300
from torchvision.ops import box_iou

from benchmarks.timing import median_seconds, report
from ssd_core.boxes import cxcywh_to_xyxy, encode, xyxy_to_cxcywh
from ssd_core.convert import from_torchvision
from ssd_core.loss import multibox_loss
from ssd_core.matching import TargetEncoder, match_priors
from ssd_core.postprocess import detect
from ssd_core.priors import make_priors, ssd300_prior_spec

PRIORS = make_priors(ssd300_prior_spec())


def random_boxes(g: torch.Generator, n: int) -> torch.Tensor:
    """``[n, 4]`` normalised xyxy boxes of VOC-like sizes."""
    wh = 0.05 + torch.rand(n, 2, generator=g) * 0.5
    xy = torch.rand(n, 2, generator=g) * (1 - wh)
    return torch.cat((xy, xy + wh), dim=1)


def bench_encode(repeats: int) -> None:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    images = [(random_boxes(g, 7), torch.randint(1, 21, (7,), generator=g)) for _ in range(64)]
    spec = ssd300_prior_spec()
    encoder = TargetEncoder(PRIORS, prior_spec=spec)
    anchors = cxcywh_to_xyxy(PRIORS)
    matcher, coder = det_utils.SSDMatcher(0.5), det_utils.BoxCoder((10.0, 10.0, 5.0, 5.0))

    def one_by_one() -> None:
        for boxes, labels in images:
            encoder(boxes, labels)

    chunks = [([b for b, _ in images[i : i + 32]], [lab for _, lab in images[i : i + 32]]) for i in range(0, 64, 32)]

    def batched() -> None:
        for boxes, labels in chunks:
            encoder.encode_batch(boxes, labels)

    def peer() -> None:
        for boxes, labels in images:
            matched = matcher(box_iou(boxes, anchors))
            fg = matched >= 0
            target = torch.zeros(anchors.shape[0], dtype=torch.int64)
            target[fg] = labels[matched[fg]]
            coder.encode_single(boxes[matched.clamp(min=0)], anchors)

    n = len(images)
    peer_s = median_seconds(peer, repeats) / n
    report(
        "encode_targets / image, one call per image",
        median_seconds(one_by_one, repeats) / n,
        peer_s,
        "torchvision SSDMatcher+BoxCoder",
        target=">=5x,<=200us",
    )
    report(
        "encode_batch / image, batches of 32",
        median_seconds(batched, repeats) / n,
        peer_s,
        "torchvision SSDMatcher+BoxCoder",
        target=">=5x,<=200us",
    )


def bench_loss(repeats: int) -> None:
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(1)
    batch, classes = 32, 21
    targets, loc_t, lab_t, matched = [], [], [], []
    encoder = TargetEncoder(PRIORS)
    anchors = cxcywh_to_xyxy(PRIORS) * 300
    for _ in range(batch):
        boxes, labels = random_boxes(g, 5), torch.randint(1, classes, (5,), generator=g)
        targets.append({"boxes": boxes * 300, "labels": labels})
        loc, lab = encoder(boxes, labels)
        loc_t.append(loc)
        lab_t.append(lab)
        matched.append(match_priors(box_iou(boxes, cxcywh_to_xyxy(PRIORS))))
    loc_t, lab_t = torch.stack(loc_t), torch.stack(lab_t)
    loc = torch.randn(batch, 8732, 4, generator=g).requires_grad_()
    conf = torch.randn(batch, 8732, classes, generator=g).requires_grad_()
    tv = tv_ssd300(weights=None, weights_backbone=None, num_classes=classes)

    def ours() -> None:
        out = multibox_loss(loc, conf, loc_t, lab_t)
        out["loss"].backward()

    def peer() -> None:
        out = tv.compute_loss(targets, {"bbox_regression": loc, "cls_logits": conf}, [anchors] * batch, matched)
        (out["bbox_regression"] + out["classification"]).backward()

    report(
        "multibox_loss fwd+bwd (B=32, SSD300, 2 thr)",
        median_seconds(ours, repeats),
        median_seconds(peer, repeats),
        "torchvision SSD.compute_loss",
        1e3,
        "ms",
        target=">=3x",
    )


def trained_like_outputs(g: torch.Generator, batch: int, classes: int, objects: int = 6) -> tuple[torch.Tensor, ...]:
    """Head outputs as a trained SSD300 gives them: background confident almost
    everywhere; around each object the priors that overlap it (IoU > 0.4) fire for its
    class, more surely the better they overlap, with offsets pointing at it plus noise,
    so that NMS has real clusters to suppress."""
    conf = torch.randn(batch, 8732, classes, generator=g)
    conf[..., 0] += 8.0
    loc = torch.randn(batch, 8732, 4, generator=g) * 0.5
    priors_xyxy = cxcywh_to_xyxy(PRIORS)
    for b in range(batch):
        boxes = random_boxes(g, objects)
        labels = torch.randint(1, classes, (objects,), generator=g)
        iou = box_iou(boxes, priors_xyxy)
        best, which = iou.max(dim=0)
        hit = best > 0.4
        conf[b, hit, labels[which[hit]]] += 6.0 + 10.0 * best[hit]
        target = encode(xyxy_to_cxcywh(boxes[which[hit]]), PRIORS[hit])
        loc[b, hit] = target + torch.randn(int(hit.sum()), 4, generator=g) * 0.3
    return loc, conf


def low_confidence_outputs(g: torch.Generator, batch: int, classes: int) -> tuple[torch.Tensor, ...]:
    """A worst case: ~13% of (prior, class) pairs just above the 0.01 threshold (an
    early-training model), so NMS over ~400 boxes per class dominates both sides."""
    conf = torch.randn(batch, 8732, classes, generator=g)
    conf[..., 0] += 6.0
    for b in range(batch):
        hits = torch.randint(0, 8732, (60,), generator=g)
        conf[b, hits, torch.randint(1, classes, (60,), generator=g)] += 10.0
    return torch.randn(batch, 8732, 4, generator=g) * 0.5, conf


def bench_detect(repeats: int) -> None:
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(2)
    batch, classes = 8, 21
    tv = tv_ssd300(weights=None, weights_backbone=None, num_classes=classes)
    anchors = [cxcywh_to_xyxy(PRIORS) * 300] * batch
    sizes = [(300, 300)] * batch
    for name, (loc, conf) in (
        ("trained-like", trained_like_outputs(g, batch, classes)),
        ("low-confidence", low_confidence_outputs(g, batch, classes)),
    ):
        head = {"bbox_regression": loc, "cls_logits": conf}
        ours_out, peer_out = detect(loc, conf, PRIORS, sizes), tv.postprocess_detections(head, anchors, sizes)
        same = all(
            torch.equal(o["labels"], p["labels"]) and torch.allclose(o["boxes"], p["boxes"], atol=1e-3)
            for o, p in zip(ours_out, peer_out)
        )
        kept = sum(len(o["labels"]) for o in ours_out)
        ratio = report(
            f"detect, {name} (B=8, SSD300, 21 cls, 2 thr)",
            median_seconds(lambda loc=loc, conf=conf: detect(loc, conf, PRIORS, sizes), repeats),
            median_seconds(lambda head=head: tv.postprocess_detections(head, anchors, sizes), repeats),
            "torchvision postprocess_detections",
            1e3,
            "ms",
            target=">=3x",
        )
        print(f"{'':<44} same kept boxes: {same} ({kept} boxes)  ratio {ratio:.2f}x", flush=True)


def bench_train_step(repeats: int) -> None:
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(3)
    batch, classes = 8, 21
    torch.manual_seed(0)
    tv = tv_ssd300(weights=None, weights_backbone=None, num_classes=classes).train()
    # Ours as our training engine runs it (train.channels_last, the default).
    ours_model = from_torchvision(tv).train().to(memory_format=torch.channels_last)
    images = torch.rand(batch, 3, 300, 300, generator=g)
    boxes = [random_boxes(g, 4) for _ in range(batch)]
    labels = [torch.randint(1, classes, (4,), generator=g) for _ in range(batch)]
    targets = [{"boxes": b * 300, "labels": lab} for b, lab in zip(boxes, labels)]
    encoder = TargetEncoder(ours_model.priors)
    encoded = [encoder(b, lab) for b, lab in zip(boxes, labels)]
    loc_t, lab_t = torch.stack([e[0] for e in encoded]), torch.stack([e[1] for e in encoded])
    mean = torch.tensor(ours_model.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(ours_model.image_std).view(1, 3, 1, 1)
    normalised = ((images - mean) / std).contiguous(memory_format=torch.channels_last)  # tv normalises inside
    opt_ours = torch.optim.SGD(ours_model.parameters(), lr=1e-5, momentum=0.9)
    opt_tv = torch.optim.SGD(tv.parameters(), lr=1e-5, momentum=0.9)

    def ours() -> None:
        loc, conf = ours_model(normalised)
        out = multibox_loss(loc, conf, loc_t, lab_t)
        opt_ours.zero_grad()
        out["loss"].backward()
        opt_ours.step()

    def peer() -> None:
        out = tv(list(images), targets)
        opt_tv.zero_grad()
        (out["bbox_regression"] + out["classification"]).backward()
        opt_tv.step()

    report(
        "SSD300 train step (B=8, 2 thr, ours NHWC)",
        median_seconds(ours, repeats, 1),
        median_seconds(peer, repeats, 1),
        "torchvision ssd300_vgg16",
        1e3,
        "ms",
        target=">=1.0x",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    args = parser.parse_args()
    r = 3 if args.quick else 1
    bench_encode(5 if args.quick else 30)
    bench_loss(3 if args.quick else 15)
    bench_detect(3 if args.quick else 20)
    bench_train_step(r if args.quick else 5)


if __name__ == "__main__":
    main()
