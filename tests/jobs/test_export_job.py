import numpy as np
import pytest
import torch

from jobs.export import main
from pipeline.config import load_config
from pipeline.model_store import save_model
from pipeline.onnx_export import ExportMismatch, export_verified
from ssd_core.export import DecodedSSD
from tests.ssd_core.test_export import varied_model

ort = pytest.importorskip("onnxruntime")


@pytest.fixture
def model_dir(tmp_path):
    model = varied_model()  # scores that differ from prior to prior: no NMS ties
    save_model(tmp_path / "model", None, model, load_config(None, []), ("a", "b", "c"))
    return tmp_path / "model", model


def test_export_job_writes_a_graph_that_matches_eager(model_dir, tmp_path, capsys):
    folder, model = model_dir
    out = tmp_path / "onnx" / "ssd.onnx"
    assert main(["--model", str(folder), "--out", str(out)]) == 0
    assert "max |ONNX - eager|" in capsys.readouterr().out
    images = torch.rand(3, 3, 128, 128)  # another batch size than the check used
    got = ort.InferenceSession(str(out)).run(None, {"images": images.numpy()})
    with torch.no_grad():
        want = DecodedSSD(model)(images)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w.numpy(), atol=1e-4)

    assert main(["--model", str(folder), "--out", str(tmp_path / "nms.onnx"), "--nms"]) == 0
    printed = capsys.readouterr().out
    assert "one image" in printed and "of detections equal eager's" in printed


def test_a_mismatch_writes_nothing(model_dir, tmp_path, monkeypatch):
    _, model = model_dir
    import pipeline.onnx_export as exporting

    class Wrong(DecodedSSD):  # the eager reference disagrees with the graph
        def forward(self, images):
            boxes, scores = super().forward(images)
            return boxes + 0.01, scores

    monkeypatch.setattr(exporting, "DecodedSSD", Wrong)
    with pytest.raises(ExportMismatch, match="boxes: ONNX differs"):
        export_verified(model, tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists()


def test_unknown_model_is_a_clear_error(tmp_path, capsys):
    assert main(["--model", str(tmp_path / "none"), "--out", str(tmp_path / "x.onnx")]) == 2
    assert "error:" in capsys.readouterr().err
