import pytest
import torch
from torchvision.models import vgg16, vgg16_bn
from torchvision.models.detection import ssd300_vgg16 as tv_ssd300

from ssd_core.boxes import xyxy_to_cxcywh
from ssd_core.convert import from_torchvision, load_vgg16_imagenet
from ssd_core.models import ssd300_vgg16


@pytest.mark.parametrize("num_classes", [21, 7])
def test_from_torchvision_matches_head_outputs(num_classes):
    torch.manual_seed(num_classes)
    tv = tv_ssd300(weights=None, weights_backbone=None, num_classes=num_classes).eval()
    with torch.no_grad():  # non-trivial scale weights, so L2Norm is exercised
        tv.backbone.scale_weight.uniform_(5, 30)
    model = from_torchvision(tv).eval()
    x = torch.randn(2, 3, 300, 300)
    with torch.no_grad():
        reference = tv.head(list(tv.backbone(x).values()))
        loc, conf = model(x)
    torch.testing.assert_close(loc, reference["bbox_regression"], atol=1e-4, rtol=0)
    torch.testing.assert_close(conf, reference["cls_logits"], atol=1e-4, rtol=0)
    assert model.num_classes == num_classes


def test_from_torchvision_priors_equal_torchvision_anchors():
    from torchvision.models.detection.image_list import ImageList

    tv = tv_ssd300(weights=None, weights_backbone=None, num_classes=21).eval()
    model = from_torchvision(tv)
    x = torch.zeros(1, 3, 300, 300)
    with torch.no_grad():
        anchors = tv.anchor_generator(ImageList(x, [(300, 300)]), list(tv.backbone(x).values()))[0]
    torch.testing.assert_close(xyxy_to_cxcywh(anchors) / 300, model.priors, atol=1e-6, rtol=0)


@pytest.fixture(scope="module")
def vgg16_file(tmp_path_factory):
    """A torchvision VGG16 state dict on disk, in float16 to halve its 528 MB."""
    torch.manual_seed(0)
    state = {k: v.half() for k, v in vgg16(weights=None).state_dict().items()}
    path = tmp_path_factory.mktemp("weights") / "vgg16.pth"
    torch.save(state, path)
    return path, state


def test_load_vgg16_imagenet(vgg16_file):
    path, reference = vgg16_file
    model = load_vgg16_imagenet(ssd300_vgg16(), path)
    backbone = model.features.backbone
    torch.testing.assert_close(backbone.features[28].weight, reference["features.28.weight"].float())
    fc6 = reference["classifier.0.weight"].view(4096, 512, 7, 7).float()
    torch.testing.assert_close(backbone.fc6[0].weight[1, :, 2, 1], fc6[4, :, 6, 3])
    torch.testing.assert_close(backbone.fc6[0].bias, reference["classifier.0.bias"][::4].float())
    torch.testing.assert_close(backbone.fc7[0].weight[5, 7, 0, 0], reference["classifier.3.weight"][20, 28].float())


def test_load_vgg16_bn_into_batch_norm_model(tmp_path):
    reference = {k: (v.half() if v.is_floating_point() else v) for k, v in vgg16_bn(weights=None).state_dict().items()}
    reference["features.1.running_var"].uniform_(0.5, 2.0)
    path = tmp_path / "vgg16_bn.pth"
    torch.save(reference, path)
    model = load_vgg16_imagenet(ssd300_vgg16(batch_norm=True), path)
    torch.testing.assert_close(
        model.features.backbone.features[1].running_var, reference["features.1.running_var"].float()
    )


def test_load_vgg16_errors_name_the_file(tmp_path, vgg16_file):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_vgg16_imagenet(ssd300_vgg16(), tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="bad.pth"):
        load_vgg16_imagenet(ssd300_vgg16(), bad)
    with pytest.raises(ValueError, match="vgg16_bn backbone"):
        load_vgg16_imagenet(ssd300_vgg16(batch_norm=True), vgg16_file[0])
