import math

import pytest
import torch
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator

from ssd_core.priors import PriorSpec, make_priors, scales_from_range, ssd300_prior_spec, ssd512_prior_spec


def test_one_cell_map_by_hand():
    spec = PriorSpec(image_size=300, feature_sizes=(1,), scales=(0.5, 0.8), aspect_ratios=((2.0,),))
    r2, extra = math.sqrt(2.0), math.sqrt(0.5 * 0.8)
    expected = torch.tensor(
        [
            [0.5, 0.5, 0.5, 0.5],
            [0.5, 0.5, extra, extra],
            [0.5, 0.5, 0.5 * r2, 0.5 / r2],
            [0.5, 0.5, 0.5 / r2, 0.5 * r2],
        ]
    )
    torch.testing.assert_close(make_priors(spec), expected)


def test_two_by_two_map_is_location_major_row_major():
    spec = PriorSpec(image_size=100, feature_sizes=(2,), scales=(0.2, 0.2), aspect_ratios=((),))
    priors = make_priors(spec)
    # 4 cells x 2 boxes (the s_k square and the sqrt(s_k s_k+1) square, equal here).
    centres = priors[::2, :2].tolist()
    assert centres == [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]
    assert torch.equal(priors[0::2], priors[1::2])


def test_steps_place_centres_on_the_stride():
    priors = make_priors(ssd300_prior_spec())
    assert priors[0, 0].item() == pytest.approx(4 / 300)
    assert priors[4, 0].item() == pytest.approx(12 / 300)  # next cell of the 38 map, 4 boxes per cell


def test_caffe_scales():
    assert scales_from_range(0.2, 0.9, 6, first_scale=0.1, integer_percent=True) == [
        0.1,
        0.2,
        0.37,
        0.54,
        0.71,
        0.88,
        1.05,
    ]
    assert scales_from_range(0.15, 0.9, 7, first_scale=0.07, integer_percent=True) == [
        0.07,
        0.15,
        0.3,
        0.45,
        0.6,
        0.75,
        0.9,
        1.05,
    ]
    # The paper's rule without special cases: s_k = s_min + (s_max - s_min)(k - 1)/(m - 1).
    assert scales_from_range(0.2, 0.9, 6) == pytest.approx([0.2, 0.34, 0.48, 0.62, 0.76, 0.9, 1.04])


def test_prior_counts():
    assert make_priors(ssd300_prior_spec()).shape == (8732, 4)
    assert make_priors(ssd512_prior_spec()).shape == (24564, 4)
    assert ssd300_prior_spec().num_priors == 8732


@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("spec_fn", [ssd300_prior_spec, ssd512_prior_spec])
def test_matches_torchvision_default_box_generator(spec_fn, clip):
    spec = spec_fn(clip="size" if clip else "none")
    generator = DefaultBoxGenerator(
        [list(r) for r in spec.aspect_ratios], scales=list(spec.scales), steps=list(spec.steps), clip=clip
    )
    sizes = [[f, f] for f in spec.feature_sizes]
    reference = generator._grid_default_boxes(sizes, [spec.image_size] * 2, dtype=torch.float64)
    torch.testing.assert_close(make_priors(spec, torch.float64), reference)


def test_box_clipping_keeps_corners_inside():
    priors = make_priors(ssd300_prior_spec(clip="box"))
    x1y1, x2y2 = priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2
    assert x1y1.min() >= -1e-6 and x2y2.max() <= 1 + 1e-6
    assert (priors[:, 2:] > 0).all()


def test_bad_specs_are_refused():
    with pytest.raises(ValueError, match="needs 3 scales"):
        PriorSpec(300, (2, 1), (0.2, 0.5), ((), ()))
    with pytest.raises(ValueError, match="clip"):
        PriorSpec(300, (1,), (0.2, 0.5), ((),), clip="yes")
    with pytest.raises(ValueError, match="s_min < s_max"):
        scales_from_range(0.9, 0.2, 6)
