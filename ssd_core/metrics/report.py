"""Evaluation artifacts: per-class precision-recall curves as PNG, an AP table, and a
grid of sample detections.

Uses matplotlib's object-oriented ``Figure`` (no pyplot state, no display needed), so it
runs on headless workers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle


def class_name(label: int, class_names: Sequence[str]) -> str:
    return class_names[label - 1] if 0 < label <= len(class_names) else f"class {label}"


def write_pr_curves(
    curves: Mapping[int, tuple[np.ndarray, np.ndarray]],
    ap: Mapping[int, float],
    class_names: Sequence[str],
    out_dir: str | Path,
) -> list[Path]:
    """One PNG per class, ``pr_{label:03d}_{name}.png``, each the class's precision
    against recall with its AP in the title. Returns the written paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for label, (recall, precision) in sorted(curves.items()):
        name = class_name(label, class_names)
        fig = Figure(figsize=(4, 4), dpi=100)
        axes = fig.add_subplot()
        # The envelope VOC2010+ integrates, with the raw curve beneath it.
        envelope = np.maximum.accumulate(np.asarray(precision)[::-1])[::-1] if len(precision) else precision
        axes.plot(recall, precision, color="0.7", linewidth=1, label="precision")
        axes.step(recall, envelope, where="post", linewidth=1.5, label="interpolated")
        axes.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision")
        axes.set_title(f"{name}: AP {ap.get(label, float('nan')):.3f}")
        axes.grid(alpha=0.3)
        axes.legend(loc="lower left", fontsize=8)
        fig.tight_layout()
        path = out_dir / f"pr_{label:03d}_{re.sub(r'[^A-Za-z0-9_-]+', '_', name)}.png"
        fig.savefig(path)
        paths.append(path)
    return paths


def ap_table(ap: Mapping[int, float], class_names: Sequence[str], mean: float | None = None) -> str:
    """A Markdown table of per-class AP, then the mean."""
    lines = ["| class | AP |", "| --- | --- |"]
    lines += [f"| {class_name(label, class_names)} | {value:.4f} |" for label, value in sorted(ap.items())]
    if mean is None:
        mean = float(np.mean(list(ap.values()))) if ap else 0.0
    lines.append(f"| **mean** | **{mean:.4f}** |")
    return "\n".join(lines) + "\n"


def write_detection_grid(
    images: Sequence[np.ndarray],
    detections: Sequence[Mapping[str, np.ndarray]],
    class_names: Sequence[str],
    path: str | Path,
    min_score: float = 0.3,
    columns: int = 4,
) -> Path:
    """One PNG of ``images`` (uint8 ``[H, W, 3]``) with their detections drawn: boxes
    (xyxy in those images' pixels) scoring at least ``min_score``, labelled with class and
    score. Returns ``path``."""
    rows = max(1, -(-len(images) // columns))
    fig = Figure(figsize=(3 * columns, 3 * rows), dpi=100)
    colours = [f"C{k % 10}" for k in range(len(class_names) + 1)]
    for i, (image, det) in enumerate(zip(images, detections)):
        axes = fig.add_subplot(rows, columns, i + 1)
        axes.imshow(image)
        axes.set_axis_off()
        scores = np.asarray(det["scores"])
        for box, score, label in zip(np.asarray(det["boxes"])[scores >= min_score], scores[scores >= min_score],
                                     np.asarray(det["labels"])[scores >= min_score]):  # fmt: skip
            x0, y0, x1, y1 = (float(v) for v in box)
            colour = colours[int(label) % len(colours)]
            axes.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=1.5))
            axes.text(x0, y0, f"{class_name(int(label), class_names)} {score:.2f}", fontsize=6, color="white",
                      va="bottom", bbox={"facecolor": colour, "alpha": 0.7, "pad": 1, "linewidth": 0})  # fmt: skip
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
