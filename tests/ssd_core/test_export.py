import numpy as np
import pytest
import torch

from ssd_core.export import DecodedSSD, DetectingSSD, export_onnx
from ssd_core.models import ssd_light

ort = pytest.importorskip("onnxruntime")


def varied_model(num_classes: int = 4) -> torch.nn.Module:
    """A light SSD whose outputs differ from cell to cell (random BN statistics), so that
    detections are not a sea of tied scores."""
    torch.manual_seed(0)
    model = ssd_light(num_classes).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2)
                m.running_mean.normal_(0, 0.2)
    return model


def test_decoded_export_equals_eager(tmp_path):
    model = varied_model()
    path = export_onnx(model, tmp_path / "ssd.onnx")
    session = ort.InferenceSession(str(path))
    x = torch.rand(3, 3, 128, 128)  # another batch size than the export's
    boxes, scores = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        ref_boxes, ref_scores = DecodedSSD(model)(x)
    np.testing.assert_allclose(boxes, ref_boxes.numpy(), atol=1e-4)
    np.testing.assert_allclose(scores, ref_scores.numpy(), atol=1e-5)


def test_nms_export_equals_eager(tmp_path):
    model = varied_model()
    path = export_onnx(model, tmp_path / "ssd_nms.onnx", nms=True, score_threshold=0.3, max_detections=100)
    session = ort.InferenceSession(str(path))
    x = torch.rand(1, 3, 128, 128)
    boxes, scores, labels = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        ref = DetectingSSD(model, score_threshold=0.3, max_detections=100)(x)
    assert len(boxes) == len(ref[0]) > 0
    np.testing.assert_allclose(np.sort(scores), np.sort(ref[1].numpy()), atol=1e-5)
    # Equal scores may come out in another order; compare as sets of (label, box).
    ours = sorted(zip(labels.tolist(), np.round(boxes, 3).tolist()))
    theirs = sorted(zip(ref[2].tolist(), np.round(ref[0].numpy(), 3).tolist()))
    assert ours == theirs
