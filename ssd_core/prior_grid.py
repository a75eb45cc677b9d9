"""Finding the (box, prior) pairs that can matter for matching, from the priors' grid.

Matching needs, per box, its best prior and every prior with IoU >= the threshold. A
dense ``[N, P]`` IoU matrix computes 61k IoUs for 7 boxes on SSD300's 8732 priors,
nearly all of them zero or tiny. But priors come in groups (one per map and cell shape),
each a regular grid of identical boxes, so for a box and a group:

- the priors that overlap the box are a rectangle of cells, found by arithmetic;
- the IoU of any prior of the group with the box is at most what they reach when
  aligned, ``I / (a + b - I)`` with ``I = min(w_a, w_b) * min(h_a, h_b)``, so whole
  groups are skipped when that bound cannot reach what matching needs.

No library offers this (torchvision and detectron2 compute the dense matrix), hence the
hand-written code. :mod:`ssd_core.matching` checks the bound after matching and widens
the search when a skipped group could have held a better prior, so the result equals
the dense computation.
"""

from __future__ import annotations

import numpy as np
import torch

from ssd_core.priors import PriorSpec, cell_sizes, make_priors


class PriorGrid:
    """The group structure of a :class:`PriorSpec`'s priors (location-major order).

    Attributes (all numpy, one entry per group G):
        half_wh: ``[G, 2]`` half sizes of the group's boxes before any "box" clipping (a
            superset of the clipped boxes' extent, so no overlapping cell is missed).
        width_hi, height_hi, area_lo: the largest width and height and the smallest area
            among the group's priors (the nominal ones unless "box" clipping shrank
            those at the border).
        step: centre spacing; size: cells per side; base, stride, slot: prior index of
            cell (row, col) is ``base + (row * size + col) * stride + slot``.
    """

    def __init__(self, spec: PriorSpec) -> None:
        half_wh, step, size, base, stride, slot = [], [], [], [], [], []
        offset = 0
        for k, f in enumerate(spec.feature_sizes):
            wh = cell_sizes(spec.scales[k], spec.scales[k + 1], spec.aspect_ratios[k])
            if spec.clip == "size":
                wh = wh.clamp(0.0, 1.0)
            s = spec.steps[k] / spec.image_size if spec.steps is not None else 1.0 / f
            for a, (w, h) in enumerate(wh.tolist()):
                half_wh.append((w / 2, h / 2))
                step.append(s)
                size.append(f)
                base.append(offset)
                stride.append(len(wh))
                slot.append(a)
            offset += f * f * len(wh)
        self.half_wh = np.array(half_wh).reshape(-1, 2)
        self.step, self.size = np.array(step), np.array(size, dtype=np.int64)
        self.base, self.stride, self.slot = (np.array(v, dtype=np.int64) for v in (base, stride, slot))
        self.num_priors = offset
        self.uniform = spec.clip != "box"  # every prior of a group the same size
        priors = make_priors(spec, dtype=torch.float64).numpy()
        self.width_hi, self.height_hi, self.area_lo = (np.empty(len(base)) for _ in range(3))
        for g in range(len(base)):
            members = priors[self.base[g] + np.arange(size[g] ** 2) * self.stride[g] + self.slot[g]]
            self.width_hi[g], self.height_hi[g] = members[:, 2].max(), members[:, 3].max()
            self.area_lo[g] = (members[:, 2] * members[:, 3]).min()

    def iou_bounds(self, boxes: np.ndarray) -> np.ndarray:
        """``[N, 4]`` xyxy -> ``[N, G]`` upper bound of the IoU of each box with any prior
        of each group.

        For a prior of width <= W, height <= H and area >= A_lo, the intersection is at
        most ``I = min(w, W) * min(h, H)`` and IoU, increasing in the intersection and
        decreasing in the prior's area, is at most ``I / (max(A_lo, I) + area - I)``. For
        unclipped groups that is exactly the IoU of the two boxes centred on each other.
        """
        w = (boxes[:, 2] - boxes[:, 0]).astype(np.float64)[:, None]
        h = (boxes[:, 3] - boxes[:, 1]).astype(np.float64)[:, None]
        inter = np.minimum(w, self.width_hi) * np.minimum(h, self.height_hi)
        bound = inter / (np.maximum(self.area_lo, inter) + w * h - inter)
        # The bound is tight (reached by aligned boxes); the float32 IoU that matching
        # compares it with may round above it, so leave a margin.
        return bound + 1e-5

    def candidates(
        self, boxes: np.ndarray, box_ids: np.ndarray, groups: np.ndarray, min_iou: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The priors of group ``groups[i]`` that may reach IoU ``min_iou[i]`` with box
        ``box_ids[i]`` (a superset: every such prior is in, and a few others).

        A prior centred ``dx`` from the box centre overlaps it by at most
        ``(w_a + w_b) / 2 - |dx|`` in width and ``min(h_a, h_b)`` in height; IoU >= t needs
        an intersection of at least ``I_t = t (a + b) / (1 + t)``, hence
        ``|dx| <= (w_a + w_b) / 2 - I_t / min(h_a, h_b)`` (and likewise for dy). With "box"
        clipping the priors are not a uniform grid, and every overlapping cell is taken.

        Returns:
            ``(box [T], prior [T])`` int64 pairs, grouped by box in the order of ``box_ids``.
        """
        b = boxes[box_ids].astype(np.float64)
        half, step, size = self.half_wh[groups], self.step[groups][:, None], self.size[groups][:, None]
        # x and y side by side in [K, 2] arrays: half the numpy calls of one axis at a time.
        centre, extent = (b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]
        reach = half + extent / 2  # centre offsets of any overlap
        if self.uniform:
            need = min_iou * (4 * half[:, 0] * half[:, 1] + extent[:, 0] * extent[:, 1]) / (1 + min_iou)
            reach = reach - need[:, None] / np.minimum(2 * half, extent)[:, ::-1]
        # Cell i's centre is (i + 0.5) * step; floor/ceil err on the side of one cell more.
        first = np.clip(np.floor((centre - reach) / step - 0.5), 0, size - 1).astype(np.int64)
        last = np.clip(np.ceil((centre + reach) / step - 0.5), 0, size - 1).astype(np.int64)
        c0, r0, c1, r1 = first[:, 0], first[:, 1], last[:, 0], last[:, 1]
        ncols = np.maximum(c1 - c0 + 1, 0)
        counts = ncols * np.maximum(r1 - r0 + 1, 0)
        pair = np.repeat(np.arange(len(groups)), counts)
        local = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        cols = c0[pair] + local % ncols[pair]
        rows = r0[pair] + local // ncols[pair]
        g = groups[pair]
        prior = self.base[g] + (rows * self.size[g] + cols) * self.stride[g] + self.slot[g]
        return box_ids[pair], prior
