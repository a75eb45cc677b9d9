import numpy as np
import torch
from torchvision.ops import box_iou

from ssd_core.boxes import cxcywh_to_xyxy
from ssd_core.prior_grid import PriorGrid
from ssd_core.priors import make_priors, ssd300_prior_spec


def test_bounds_are_upper_bounds_and_tight():
    spec = ssd300_prior_spec()
    grid = PriorGrid(spec)
    priors_xyxy = cxcywh_to_xyxy(make_priors(spec, torch.float64))
    g = torch.Generator().manual_seed(0)
    wh = torch.rand(30, 2, generator=g, dtype=torch.float64) * 0.6 + 0.01
    xy = torch.rand(30, 2, generator=g, dtype=torch.float64) * (1 - wh)
    boxes = torch.cat((xy, xy + wh), 1)
    iou = box_iou(boxes, priors_xyxy).numpy()
    bounds = grid.iou_bounds(boxes.numpy())
    for g_ in range(len(grid.base)):
        members = grid.base[g_] + np.arange(grid.size[g_] ** 2) * grid.stride[g_] + grid.slot[g_]
        assert (iou[:, members].max(axis=1) <= bounds[:, g_]).all()
    # A prior's own box reaches its group's bound.
    own = priors_xyxy[100:101].numpy()
    assert np.isclose(grid.iou_bounds(own).max(), 1.0, atol=1e-4)


def test_candidates_hold_every_prior_above_the_floor():
    spec = ssd300_prior_spec()
    grid = PriorGrid(spec)
    priors_xyxy = cxcywh_to_xyxy(make_priors(spec, torch.float64))
    boxes = np.array([[0.1, 0.2, 0.3, 0.5], [0.0, 0.0, 0.9, 0.7], [0.5, 0.5, 0.52, 0.53]])
    iou = box_iou(torch.from_numpy(boxes), priors_xyxy).numpy()
    floor = 0.3
    for b in range(3):
        groups = np.arange(len(grid.base))
        box, prior = grid.candidates(boxes, np.full(len(groups), b), groups, np.full(len(groups), floor))
        assert set(np.flatnonzero(iou[b] >= floor)) <= set(prior.tolist())
        assert (box == b).all()
