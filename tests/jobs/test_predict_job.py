import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from jobs.predict import main
from pipeline.config import EvalConfig, load_config
from pipeline.engine import predict
from pipeline.model_store import save_model
from pipeline.predict import decode_file
from ssd_core.data.shapes import write_shapes
from tests.ssd_core.test_export import varied_model


def assert_same_detections(boxes, scores, labels, want) -> None:
    """Equal as sets, one to one within tolerance: equal scores (uniform background) may
    come out in another order, and a batch of 4 and a batch of 10 round differently."""
    boxes, scores, labels = np.reshape(boxes, (-1, 4)), np.asarray(scores), np.asarray(labels)
    w_boxes, w_scores, w_labels = want["boxes"].numpy(), want["scores"].numpy(), want["labels"].numpy()
    assert len(scores) == len(w_scores)
    free = np.ones(len(w_scores), bool)
    for b, sc, lab in zip(boxes, scores, labels):
        ok = free & (w_labels == lab) & (np.abs(w_scores - sc) < 1e-4) & (np.abs(w_boxes - b).max(1) < 1e-2)
        assert ok.any(), f"no in-process twin for {lab} {sc} {b}"
        free[np.flatnonzero(ok)[0]] = False


@pytest.fixture
def folder(tmp_path):
    write_shapes(tmp_path / "shapes", "val", 10, seed=3, image_size=96)
    images = tmp_path / "shapes" / "val"
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (images / "notes.txt").write_text("not an image: ignored by extension")
    # Same name as a top-level image, one folder down: its drawn copy must not overwrite the other.
    (images / "more").mkdir()
    (images / "000000.jpg").rename(images / "more" / "000000.jpg")
    (images / "000000.png").write_bytes(cv2.imencode(".png", cv2.imread(str(images / "000001.jpg")))[1].tobytes())
    model = varied_model()
    save_model(tmp_path / "model", None, model, load_config(None, []), ("a", "b", "c"))
    return images, tmp_path / "model", model


def test_predict_writes_what_an_in_process_call_gives(folder, tmp_path, capsys, ray_cluster):
    images, model_dir, model = folder
    out, drawn = tmp_path / "pred", tmp_path / "drawn"
    args = ["--model", str(model_dir), "--images", str(images), "--out", str(out), "--format", "json",
            "--draw", str(drawn), "--batch-size", "4"]  # fmt: skip
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "12 images" in captured.out
    assert "broken.jpg: cannot decode" in captured.err and "1 image(s) could not be read" in captured.err

    rows = [json.loads(line) for f in sorted(out.glob("*.json*")) for line in f.read_text().splitlines()]
    by_path = {r["path"].removeprefix(str(images) + "/"): r for r in rows}
    assert len(by_path) == 12 and by_path["broken.jpg"]["error"] and not by_path["broken.jpg"]["boxes"]
    good = sorted(p.relative_to(images) for p in images.rglob("*.*") if p.suffix in (".jpg", ".png"))
    good.remove(Path("broken.jpg"))
    expected = predict(model, [decode_file((images / p).read_bytes()) for p in good], EvalConfig())
    for path, want in zip(good, expected):
        row = by_path[str(path)]
        assert row["error"] is None and (row["width"], row["height"]) == (96, 96)
        assert_same_detections(row["boxes"], row["scores"], row["labels"], want)
        assert row["classes"] == [("a", "b", "c")[k - 1] for k in row["labels"]]
    # One drawn copy per readable image, at its own path: the two 000000s are both there.
    assert sorted(p.relative_to(drawn) for p in drawn.rglob("*.*")) == good
    assert cv2.imread(str(drawn / "000000.png")).shape == (96, 96, 3)


def test_parquet_output_and_bad_input(folder, tmp_path, capsys, ray_cluster):
    import pyarrow.parquet as pq

    images, model_dir, _ = folder
    assert main(["--model", str(model_dir), "--images", str(images), "--out", str(tmp_path / "pq")]) == 0
    table = pq.read_table(tmp_path / "pq")
    assert table.num_rows == 12 and table.schema.field("boxes").type.value_type.bit_width == 32
    assert main(["--model", str(tmp_path / "nothing"), "--images", str(images), "--out", str(tmp_path / "x")]) == 2
    assert "error:" in capsys.readouterr().err


def test_images_from_a_bucket_and_detections_to_one(folder, bucket, capsys, ray_cluster):
    """The cluster's case against the session's local S3: images read from a bucket,
    detections and drawn copies written to one, each copy at its image's own path."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    images, model_dir, _ = folder
    s3, root = pafs.FileSystem.from_uri(bucket)
    pafs.copy_files(str(images), f"{root}/incoming", destination_filesystem=s3)
    args = ["--model", str(model_dir), "--images", f"{bucket}/incoming", "--out", f"{bucket}/detections",
            "--draw", f"{bucket}/drawn"]  # fmt: skip
    assert main(args) == 0
    assert "12 images" in capsys.readouterr().out
    table = pq.read_table(f"{root}/detections", filesystem=s3)
    assert table.num_rows == 12 and sum(e is not None for e in table.column("error").to_pylist()) == 1
    assert all(p.startswith(f"{bucket}/incoming/") for p in table.column("path").to_pylist())
    drawn = {i.path.removeprefix(f"{root}/drawn/") for i in s3.get_file_info(pafs.FileSelector(f"{root}/drawn",
                                                                                               recursive=True))
             if i.type == pafs.FileType.File}  # fmt: skip
    assert drawn == {"000000.png", "more/000000.jpg", *(f"{i:06d}.jpg" for i in range(1, 10))}
