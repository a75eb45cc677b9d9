"""Pascal VOC in the VOCdevkit layout.

    VOCdevkit/VOC2007/{JPEGImages, Annotations, ImageSets/Main/{trainval,test}.txt}

VOC coordinates are 1-based inclusive pixel indices; a box (xmin, ymin, xmax, ymax)
covers the continuous span ``[xmin - 1, xmax] x [ymin - 1, ymax]``, which is what the
records hold. ``difficult`` objects are kept with their flag (the paper trains on them;
evaluation ignores them).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from pathlib import Path

from ssd_core.data.record import DataError, DetectionRecord, SkipCounter, make_record, refuse

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

# The paper's SSD300/SSD512 VOC data: train on 07+12 trainval, test on 07 test.
VOC0712_TRAINVAL = (("2007", "trainval"), ("2012", "trainval"))
VOC07_TEST = (("2007", "test"),)


def _text(node: ET.Element, tag: str, source: str, what: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None:
        raise DataError(f"{source}: {what} has no <{tag}>")
    return child.text.strip()


def parse_annotation(
    xml_path: Path,
    image_path: Path,
    class_names: Sequence[str] = VOC_CLASSES,
    skip_invalid: bool = False,
    skipped: SkipCounter | None = None,
) -> DetectionRecord:
    """One VOC annotation file -> a record (errors name the file and the object)."""
    try:
        root = ET.parse(xml_path).getroot()
    except FileNotFoundError:
        raise DataError(f"{xml_path}: annotation file missing") from None
    except ET.ParseError as err:
        raise DataError(f"{xml_path}: not valid XML ({err})") from None
    source = str(xml_path)
    size = root.find("size")
    if size is None:
        raise DataError(f"{source}: no <size>")
    width = int(float(_text(size, "width", source, "<size>")))
    height = int(float(_text(size, "height", source, "<size>")))
    index = {name: i + 1 for i, name in enumerate(class_names)}
    boxes, labels, difficult, names = [], [], [], []
    for i, obj in enumerate(root.findall("object")):
        name = _text(obj, "name", source, f"object {i}")
        what = f"object {i} ({name})"
        if name not in index:
            message = f"{source}: {what} has unknown class name {name!r} (known: {', '.join(class_names)})"
            refuse(message, "unknown class name", skip_invalid, skipped, objects=1)
            continue
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise DataError(f"{source}: {what} has no <bndbox>")
        try:
            xmin, ymin, xmax, ymax = (float(_text(bndbox, t, source, what)) for t in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError as err:
            raise DataError(f"{source}: {what} has a non-numeric coordinate ({err})") from None
        flag = obj.find("difficult")
        boxes.append([xmin - 1, ymin - 1, xmax, ymax])
        labels.append(index[name])
        difficult.append(flag is not None and (flag.text or "0").strip() == "1")
        names.append(what)
    return make_record(
        xml_path.stem, width, height, boxes, labels, tuple(class_names),
        difficult=difficult, path=str(image_path), object_names=names,
        skip_invalid=skip_invalid, skipped=skipped,
    )  # fmt: skip


def read_voc(
    devkit: str | Path,
    splits: Iterable[tuple[str, str]] = VOC07_TEST,
    class_names: Sequence[str] = VOC_CLASSES,
    skip_invalid: bool = False,
    skipped: SkipCounter | None = None,
) -> list[DetectionRecord]:
    """Records of the given (year, split) pairs, in split-file order.

    Args:
        devkit: the ``VOCdevkit`` folder.
        splits: e.g. :data:`VOC0712_TRAINVAL` or :data:`VOC07_TEST`.

    Raises:
        DataError: a missing folder, split file, annotation or image, or a bad object
            (unless ``skip_invalid``, which drops bad objects and counts them).
    """
    devkit = Path(devkit)
    records = []
    for year, split in splits:
        base = devkit / f"VOC{year}"
        split_file = base / "ImageSets" / "Main" / f"{split}.txt"
        if not split_file.is_file():
            raise DataError(f"{split_file}: split file missing (is {devkit} a VOCdevkit folder?)")
        for stem in split_file.read_text().split():
            image = base / "JPEGImages" / f"{stem}.jpg"
            if not image.is_file():
                message = f"{image}: image file missing (listed in {split_file})"
                refuse(message, "image file missing", skip_invalid, skipped, images=1)
                continue
            records.append(
                parse_annotation(base / "Annotations" / f"{stem}.xml", image, class_names, skip_invalid, skipped)
            )
    return records
