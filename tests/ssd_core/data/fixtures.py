"""Tiny datasets the tests write themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_jpeg(path: Path, width: int, height: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def voc_xml(stem: str, width: int, height: int, objects: list[tuple[str, list[float], int]]) -> str:
    parts = [
        f"<annotation><filename>{stem}.jpg</filename>",
        f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>",
    ]
    for name, (x1, y1, x2, y2), difficult in objects:
        parts.append(
            f"<object><name>{name}</name><difficult>{difficult}</difficult>"
            f"<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        )
    return "".join(parts) + "</annotation>"


def write_voc(devkit: Path, year: str, split: str, images: dict[str, tuple[int, int, list]]) -> None:
    """``images``: stem -> (width, height, [(class name, [xmin, ymin, xmax, ymax], difficult)])."""
    base = devkit / f"VOC{year}"
    (base / "Annotations").mkdir(parents=True, exist_ok=True)
    (base / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for i, (stem, (w, h, objects)) in enumerate(images.items()):
        write_jpeg(base / "JPEGImages" / f"{stem}.jpg", w, h, seed=i)
        (base / "Annotations" / f"{stem}.xml").write_text(voc_xml(stem, w, h, objects))
    (base / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(images) + "\n")
