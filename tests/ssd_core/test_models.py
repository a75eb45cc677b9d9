import pytest
import torch
from torch import nn
from torchvision.models.detection import ssd300_vgg16 as tv_ssd300

from ssd_core.models import L2Norm, ssd300_vgg16, ssd512_vgg16, ssd_light
from ssd_core.models.ssd import count_parameters


@pytest.mark.parametrize("num_classes,expected", [(21, 26_285_486), (91, 35_641_826)])
def test_ssd300_parameter_count_equals_torchvision(num_classes, expected):
    assert count_parameters(ssd300_vgg16(num_classes)) == expected
    assert count_parameters(tv_ssd300(weights=None, weights_backbone=None, num_classes=num_classes)) == expected


def test_ssd300_shapes_and_maps():
    model = ssd300_vgg16(21).eval()
    with torch.no_grad():
        maps = model.features(torch.zeros(1, 3, 300, 300))
        loc, conf = model(torch.zeros(2, 3, 300, 300))
    assert [m.shape[-1] for m in maps] == [38, 19, 10, 5, 3, 1]
    assert [m.shape[1] for m in maps] == [512, 1024, 512, 256, 256, 256]
    assert loc.shape == (2, 8732, 4) and conf.shape == (2, 8732, 21)
    assert model.priors.shape == (8732, 4)


def test_atrous_fc6_and_pools():
    backbone = ssd300_vgg16().features.backbone
    fc6 = backbone.fc6[0]
    assert fc6.dilation == (6, 6) and fc6.padding == (6, 6) and fc6.kernel_size == (3, 3)
    assert backbone.fc7[0].kernel_size == (1, 1)
    pools = [m for m in backbone.features if isinstance(m, nn.MaxPool2d)]
    assert [p.ceil_mode for p in pools] == [False, False, True, False]
    assert backbone.pool5.kernel_size == 3 and backbone.pool5.stride == 1


def test_ssd512_shapes():
    model = ssd512_vgg16(21).eval()
    with torch.no_grad():
        maps = model.features(torch.zeros(1, 3, 512, 512))
    assert [m.shape[-1] for m in maps] == [64, 32, 16, 8, 4, 2, 1]
    assert model.priors.shape == (24564, 4)


def test_batch_norm_variant_trains():
    model = ssd300_vgg16(5, batch_norm=True)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.features.backbone.features)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.features.extras.modules())
    loc, conf = model(torch.randn(2, 3, 300, 300))
    (loc.sum() + conf.sum()).backward()
    assert model.features.backbone.features[0].weight.grad is not None


def test_l2norm_unit_norm_times_scale():
    layer = L2Norm(4)
    x = torch.randn(2, 4, 3, 3) * 100
    y = layer(x)
    torch.testing.assert_close(y.norm(dim=1), torch.full((2, 3, 3), 20.0))
    assert layer.weight.requires_grad


def test_wrong_input_size_is_a_clear_error():
    model = ssd_light(3).eval()
    with pytest.raises(ValueError, match="resize the images"):
        model(torch.zeros(1, 3, 96, 96))


def test_light_model_forward_backward():
    model = ssd_light(4, image_size=128)
    loc, conf = model(torch.randn(2, 3, 128, 128))
    assert loc.shape == (2, model.priors.shape[0], 4) and conf.shape[-1] == 4
    assert model.prior_spec.feature_sizes == (16, 8, 4, 2, 1)
    (loc.square().mean() + conf.square().mean()).backward()
    assert all(p.grad is not None for p in model.parameters())
    assert count_parameters(model) < 1_000_000


def test_priors_are_not_in_the_state_dict_but_follow_the_device():
    model = ssd_light(3)
    assert "priors" not in model.state_dict()
    assert model.to(torch.float64).priors.dtype == torch.float64
