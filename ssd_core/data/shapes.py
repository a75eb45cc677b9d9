"""The generated shapes set: the embedded default's data, deterministic from a seed.

Each image has a textured background (a colour gradient plus noise) and 0 to
``max_objects`` filled shapes of random colour, size (from a few pixels to most of the
image) and aspect, drawn in order so later shapes may occlude earlier ones. A shape is
placed only where it leaves every earlier box at least half visible, so every box
labels something a detector can see. Image ``i`` of seed ``s`` is the same on every
machine: it draws from its own ``numpy.random.Generator((s, i))``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPE_CLASSES = ("circle", "square", "triangle", "diamond", "cross")


@dataclass(frozen=True)
class ShapeSample:
    """One generated image and its objects.

    Attributes:
        image_id: index within the set.
        image: ``[H, W, 3]`` uint8 RGB.
        boxes: ``[N, 4]`` float32 xyxy in pixels.
        labels: ``[N]`` int64 in 1..len(SHAPE_CLASSES) (0 is background).
    """

    image_id: int
    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    a, b = rng.integers(0, 256, size=(2, 3))
    t = np.linspace(0.0, 1.0, width if rng.random() < 0.5 else height)
    ramp = a[None, :] * (1 - t[:, None]) + b[None, :] * t[:, None]  # [L, 3]
    base = np.broadcast_to(ramp[None] if len(t) == width else ramp[:, None], (height, width, 3))
    noise = rng.normal(0.0, rng.uniform(2, 25), size=(height, width, 1))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _polygon(kind: str, x1: float, y1: float, x2: float, y2: float) -> list[tuple[float, float]]:
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    if kind == "triangle":
        return [(cx, y1), (x2, y2), (x1, y2)]
    if kind == "diamond":
        return [(cx, y1), (x2, cy), (cx, y2), (x1, cy)]
    # cross: a plus sign whose arms are a third of the box
    w3, h3 = (x2 - x1) / 3, (y2 - y1) / 3
    xs, ys = (x1, x1 + w3, x2 - w3, x2), (y1, y1 + h3, y2 - h3, y2)
    return [
        (xs[1], ys[0]),
        (xs[2], ys[0]),
        (xs[2], ys[1]),
        (xs[3], ys[1]),
        (xs[3], ys[2]),
        (xs[2], ys[2]),
        (xs[2], ys[3]),
        (xs[1], ys[3]),
        (xs[1], ys[2]),
        (xs[0], ys[2]),
        (xs[0], ys[1]),
        (xs[1], ys[1]),
    ]


def _visible_fraction(box: np.ndarray, later: np.ndarray) -> float:
    """Lower bound of the fraction of ``box`` not covered by ``later`` boxes."""
    area = (box[2] - box[0]) * (box[3] - box[1])
    covered = 0.0
    for other in later:
        w = min(box[2], other[2]) - max(box[0], other[0])
        h = min(box[3], other[3]) - max(box[1], other[1])
        covered += max(w, 0) * max(h, 0)
    return 1.0 - covered / area


def draw_sample(
    seed: int,
    image_id: int,
    image_size: int = 128,
    max_objects: int = 6,
    min_size: int = 8,
    empty_fraction: float = 0.05,
) -> ShapeSample:
    """Draw image ``image_id`` of the set made from ``seed``."""
    rng = np.random.default_rng((seed, image_id))
    size = image_size
    canvas = Image.fromarray(_background(rng, size, size))
    draw = ImageDraw.Draw(canvas)
    count = 0 if rng.random() < empty_fraction else int(rng.integers(1, max_objects + 1))
    boxes: list[np.ndarray] = []
    labels: list[int] = []
    for _ in range(count):
        for _attempt in range(10):
            # log-uniform side: as many tiny shapes as large ones
            side = math.exp(rng.uniform(math.log(min_size), math.log(0.8 * size)))
            aspect = math.exp(rng.uniform(-0.4, 0.4))
            w, h = side * aspect, side / aspect
            w, h = min(w, size - 1), min(h, size - 1)
            x1, y1 = rng.uniform(0, size - w), rng.uniform(0, size - h)
            box = np.array([x1, y1, x1 + w, y1 + h], dtype=np.float32)
            earlier = np.stack(boxes + [box])
            if all(_visible_fraction(earlier[i], earlier[i + 1 :]) >= 0.5 for i in range(len(boxes))):
                break
        else:
            continue
        label = int(rng.integers(1, len(SHAPE_CLASSES) + 1))
        kind = SHAPE_CLASSES[label - 1]
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        xy = [float(v) for v in box]
        if kind == "circle":
            draw.ellipse(xy, fill=colour)
        elif kind == "square":
            draw.rectangle(xy, fill=colour)
        else:
            draw.polygon(_polygon(kind, *xy), fill=colour)
        boxes.append(box)
        labels.append(label)
    return ShapeSample(
        image_id=image_id,
        image=np.array(canvas),  # writable, so torch.from_numpy needs no copy
        boxes=np.stack(boxes) if boxes else np.zeros((0, 4), np.float32),
        labels=np.asarray(labels, dtype=np.int64),
    )


def generate_shapes(num_images: int, seed: int = 0, image_size: int = 128, max_objects: int = 6) -> list[ShapeSample]:
    """``num_images`` samples of the set made from ``seed``."""
    return [draw_sample(seed, i, image_size, max_objects) for i in range(num_images)]


def write_shapes(
    out_dir: str | Path,
    split: str,
    num_images: int,
    seed: int = 0,
    image_size: int = 128,
    max_objects: int = 6,
    quality: int = 95,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a split of the set as JPEGs plus a COCO instances file, the layout a user's
    COCO-style data has, and return the annotation file's path.

        out_dir/{split}/000000.jpg ...   out_dir/annotations/instances_{split}.json

    Idempotent: an existing complete split (its annotation file, written last and
    atomically, records the same seed, count and sizes) is left as it is.
    """
    out_dir = Path(out_dir)
    ann_path = out_dir / "annotations" / f"instances_{split}.json"
    settings = {"seed": seed, "num_images": num_images, "image_size": image_size, "max_objects": max_objects}
    if ann_path.is_file():
        with open(ann_path) as f:
            if json.load(f).get("info", {}).get("generator") == settings:
                return ann_path
    (out_dir / split).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        sample = draw_sample(seed, i, image_size, max_objects)
        name = f"{i:06d}.jpg"
        Image.fromarray(sample.image).save(out_dir / split / name, quality=quality)
        images.append({"id": i, "file_name": name, "width": image_size, "height": image_size})
        for box, label in zip(sample.boxes.tolist(), sample.labels.tolist()):
            x1, y1, x2, y2 = box
            annotations.append({
                "id": len(annotations) + 1, "image_id": i, "category_id": int(label),
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0,
            })  # fmt: skip
        if progress is not None:
            progress(i + 1, num_images)
    doc = {
        "info": {"description": "generated shapes", "generator": settings},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(SHAPE_CLASSES)],
    }
    ann_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = ann_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(ann_path)  # atomic: a half-written split never looks complete
    return ann_path
