"""The one record every dataset reader yields, and its validation.

Boxes are float32 ``[N, 4]`` xyxy in pixels of the original image; labels int64 in
1..C (0 is background); ``difficult`` (VOC) and ``iscrowd`` (COCO) are bool flags kept
beside them. Readers validate every record before it leaves them, so nothing degenerate
reaches training: a bad box is an error naming the file and the object, or, with
``skip_invalid``, is dropped and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class DataError(ValueError):
    """Bad input data; the message names the file and the object."""


@dataclass(frozen=True)
class DetectionRecord:
    """One image and its objects.

    Attributes:
        image_id: unique within the dataset (VOC file stem, COCO image id as text).
        width, height: image size in pixels.
        boxes: ``[N, 4]`` float32 xyxy pixels.
        labels: ``[N]`` int64 in 1..C.
        difficult: ``[N]`` bool (VOC's flag; all False elsewhere).
        iscrowd: ``[N]`` bool (COCO's flag; all False elsewhere). Crowd regions are kept
            for evaluation and left out of training targets.
        path: the image file, when it lives on disk.
        image_bytes: the encoded image, when it lives in memory or a shard.
        class_names: names of labels 1..C, in order.
    """

    image_id: str
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    iscrowd: np.ndarray
    path: str | None = None
    image_bytes: bytes | None = field(default=None, repr=False)
    class_names: tuple[str, ...] = ()

    @property
    def source(self) -> str:
        return self.path or f"image {self.image_id}"

    def training_targets(self) -> tuple[np.ndarray, np.ndarray]:
        """``(boxes [M, 4], labels [M])`` without crowd regions (difficult ones stay, as
        the paper trained on them)."""
        keep = ~self.iscrowd
        return self.boxes[keep], self.labels[keep]


@dataclass
class SkipCounter:
    """What ``skip_invalid`` dropped, for the report at the end of a read."""

    objects: int = 0
    images: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def add(self, reason: str, images: int = 0, objects: int = 0) -> None:
        self.images += images
        self.objects += objects
        self.reasons[reason] = self.reasons.get(reason, 0) + 1

    def summary(self) -> str:
        if not self.images and not self.objects:
            return "nothing skipped"
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(self.reasons.items()))
        return f"skipped {self.images} images and {self.objects} objects ({detail})"


def refuse(
    message: str, reason: str, skip_invalid: bool, skipped: SkipCounter | None, images: int = 0, objects: int = 0
) -> None:
    """Raise ``DataError(message)``, or with ``skip_invalid`` count the skip under ``reason``
    and return so the caller drops the item."""
    if not skip_invalid:
        raise DataError(message)
    if skipped is not None:
        skipped.add(reason, images=images, objects=objects)


def make_record(
    image_id: str,
    width: int,
    height: int,
    boxes: list | np.ndarray,
    labels: list | np.ndarray,
    class_names: tuple[str, ...],
    *,
    difficult: list | np.ndarray | None = None,
    iscrowd: list | np.ndarray | None = None,
    path: str | None = None,
    image_bytes: bytes | None = None,
    object_names: list[str] | None = None,
    skip_invalid: bool = False,
    skipped: SkipCounter | None = None,
) -> DetectionRecord:
    """Build and validate a record.

    Boxes slightly outside the image (by at most one pixel, as annotation tools produce)
    are clipped; boxes further outside, with zero or negative width or height, or
    non-finite, and labels outside 1..C are errors naming the file and the object
    (``object_names[i]`` or its index), or are dropped and counted with ``skip_invalid``.
    """
    source = path or f"image {image_id}"
    if width <= 0 or height <= 0:
        raise DataError(f"{source}: image size {width}x{height} is not positive")
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    n = len(boxes)
    difficult = np.zeros(n, bool) if difficult is None else np.asarray(difficult, bool).reshape(-1)
    iscrowd = np.zeros(n, bool) if iscrowd is None else np.asarray(iscrowd, bool).reshape(-1)
    if not (len(labels) == len(difficult) == len(iscrowd) == n):
        raise DataError(f"{source}: {n} boxes but {len(labels)} labels")

    keep = np.ones(n, bool)
    for i in range(n):
        problem = _box_problem(boxes[i], labels[i], width, height, len(class_names))
        if problem is None:
            continue
        category, detail = problem
        name = object_names[i] if object_names else f"object {i}"
        refuse(f"{source}: {name} {detail}", category, skip_invalid, skipped, objects=1)
        keep[i] = False
    boxes = boxes[keep]
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    return DetectionRecord(
        image_id=str(image_id),
        width=int(width),
        height=int(height),
        boxes=boxes,
        labels=labels[keep],
        difficult=difficult[keep],
        iscrowd=iscrowd[keep],
        path=path,
        image_bytes=image_bytes,
        class_names=tuple(class_names),
    )


def _box_problem(box: np.ndarray, label: int, width: int, height: int, num_classes: int) -> tuple[str, str] | None:
    """``(category, detail)`` of what is wrong with a box, or None. A pixel of slack
    outside the image is clipped, not refused."""
    if not np.isfinite(box).all():
        return "non-finite box", f"has a non-finite box {box.tolist()}"
    x1, y1, x2, y2 = box.tolist()
    if x2 <= x1 or y2 <= y1:
        return "empty box", f"has an empty box {[x1, y1, x2, y2]} (zero or negative width or height)"
    if x1 < -1 or y1 < -1 or x2 > width + 1 or y2 > height + 1:
        return "box outside the image", f"has a box {[x1, y1, x2, y2]} outside the {width}x{height} image"
    if min(x2, width) - max(x1, 0) <= 0 or min(y2, height) - max(y1, 0) <= 0:
        return "box outside the image", f"has a box {[x1, y1, x2, y2]} with no area inside the {width}x{height} image"
    if num_classes and not 1 <= label <= num_classes:
        return "label out of range", f"has label {label}, not in 1..{num_classes}"
    return None
