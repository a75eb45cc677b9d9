"""COCO instances annotations (also the on-disk format of the generated shapes set).

Boxes are converted from COCO's xywh to xyxy. Category ids (sparse: 1..90 for COCO) map
to contiguous labels 1..C in increasing id order, and back through
:attr:`CocoCategories.ids`, so detections can be written in COCO's own ids. ``iscrowd``
objects stay in the record with their flag: evaluation treats them as COCO does, and
:meth:`DetectionRecord.training_targets` leaves them out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssd_core.data.record import DataError, DetectionRecord, SkipCounter, make_record, refuse


@dataclass(frozen=True)
class CocoCategories:
    """Contiguous label ``i`` (1-based) is COCO category ``ids[i - 1]`` named ``names[i - 1]``."""

    ids: tuple[int, ...]
    names: tuple[str, ...]

    def label_of(self, category_id: int) -> int:
        return self.ids.index(category_id) + 1

    def category_of(self, label: int) -> int:
        return self.ids[label - 1]


def load_json(path: Path) -> dict[str, Any]:
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise DataError(f"{path}: annotation file missing") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DataError(f"{path}: no {key!r} list; is this a COCO instances file?")
    return data


def read_coco(
    annotation_file: str | Path,
    image_dir: str | Path,
    skip_invalid: bool = False,
    skipped: SkipCounter | None = None,
) -> tuple[list[DetectionRecord], CocoCategories]:
    """Records of a COCO instances file, in the file's image order, and the label map.

    Raises:
        DataError: missing or malformed file, an annotation naming an unknown image or
            category, a missing image file, or a bad box (unless ``skip_invalid``).
    """
    annotation_file, image_dir = Path(annotation_file), Path(image_dir)
    data = load_json(annotation_file)
    cats = sorted(data["categories"], key=lambda c: c["id"])
    categories = CocoCategories(tuple(int(c["id"]) for c in cats), tuple(str(c["name"]) for c in cats))
    label_of = {cid: i + 1 for i, cid in enumerate(categories.ids)}
    images = {int(im["id"]): im for im in data["images"]}
    objects: dict[int, list[dict[str, Any]]] = {i: [] for i in images}
    for ann in data["annotations"]:
        image_id = int(ann["image_id"])
        if image_id not in images:
            raise DataError(f"{annotation_file}: annotation {ann.get('id')} refers to unknown image {image_id}")
        objects[image_id].append(ann)

    records = []
    for image_id, image in images.items():
        path = image_dir / image["file_name"]
        if not path.is_file():
            message = f"{path}: image file missing (image {image_id} of {annotation_file})"
            refuse(message, "image file missing", skip_invalid, skipped, images=1)
            continue
        boxes, labels, crowd, names = [], [], [], []
        for ann in objects[image_id]:
            what = f"annotation {ann.get('id')}"
            cid = int(ann["category_id"])
            if cid not in label_of:
                message = f"{annotation_file}: {what} of image {image_id} has unknown category {cid}"
                refuse(message, "unknown category", skip_invalid, skipped, objects=1)
                continue
            x, y, w, h = (float(v) for v in ann["bbox"])
            boxes.append([x, y, x + w, y + h])
            labels.append(label_of[cid])
            crowd.append(bool(ann.get("iscrowd", 0)))
            names.append(f"{what} ({categories.names[label_of[cid] - 1]})")
        records.append(
            make_record(
                str(image_id),
                int(image["width"]),
                int(image["height"]),
                boxes,
                labels,
                categories.names,
                iscrowd=crowd,
                path=str(path),
                object_names=names,
                skip_invalid=skip_invalid,
                skipped=skipped,
            )  # fmt: skip
        )
    return records, categories
