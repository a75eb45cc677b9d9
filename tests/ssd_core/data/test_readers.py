import json

import numpy as np
import pytest

from ssd_core.data.coco import read_coco
from ssd_core.data.record import DataError, SkipCounter, make_record
from ssd_core.data.shapes import SHAPE_CLASSES, draw_sample, write_shapes
from ssd_core.data.voc import VOC0712_TRAINVAL, read_voc
from tests.ssd_core.data.fixtures import write_jpeg, write_voc


@pytest.fixture
def devkit(tmp_path):
    write_voc(tmp_path, "2007", "trainval", {
        "000001": (60, 40, [("dog", [1, 1, 30, 20], 0), ("person", [10, 5, 60, 40], 1)]),
        "000002": (50, 50, []),
    })  # fmt: skip
    write_voc(tmp_path, "2012", "trainval", {"2012_000001": (80, 60, [("cat", [5, 6, 70, 50], 0)])})
    return tmp_path


def test_voc_reader(devkit):
    records = read_voc(devkit, VOC0712_TRAINVAL)
    assert [r.image_id for r in records] == ["000001", "000002", "2012_000001"]
    first = records[0]
    # 1-based inclusive pixels -> continuous: xmin - 1 .. xmax
    np.testing.assert_array_equal(first.boxes, [[0, 0, 30, 20], [9, 4, 60, 40]])
    assert first.labels.tolist() == [12, 15]  # dog, person
    assert first.difficult.tolist() == [False, True]
    assert (first.width, first.height) == (60, 40) and first.path.endswith("000001.jpg")
    assert records[1].boxes.shape == (0, 4) and len(first.class_names) == 20


def test_voc_errors_name_file_and_object(devkit):
    ann = devkit / "VOC2007" / "Annotations" / "000001.xml"
    ann.write_text(ann.read_text().replace("person", "unicorn"))
    with pytest.raises(DataError, match=r"000001\.xml: object 1 \(unicorn\) has unknown class name"):
        read_voc(devkit, [("2007", "trainval")])
    skipped = SkipCounter()
    records = read_voc(devkit, [("2007", "trainval")], skip_invalid=True, skipped=skipped)
    assert records[0].labels.tolist() == [12] and skipped.objects == 1
    assert "unknown class name" in skipped.summary()


def test_voc_missing_pieces(devkit):
    (devkit / "VOC2007" / "Annotations" / "000002.xml").unlink()
    with pytest.raises(DataError, match=r"000002\.xml: annotation file missing"):
        read_voc(devkit, [("2007", "trainval")])
    with pytest.raises(DataError, match="split file missing"):
        read_voc(devkit, [("2007", "test")])
    (devkit / "VOC2012" / "JPEGImages" / "2012_000001.jpg").unlink()
    with pytest.raises(DataError, match=r"2012_000001\.jpg: image file missing"):
        read_voc(devkit, [("2012", "trainval")])
    (devkit / "VOC2012" / "Annotations" / "2012_000001.xml").write_text("<annotation><size>")
    with pytest.raises(DataError, match="not valid XML"):
        from ssd_core.data.voc import parse_annotation

        parse_annotation(devkit / "VOC2012" / "Annotations" / "2012_000001.xml", devkit / "x.jpg")


@pytest.mark.parametrize(
    "box,message",
    [
        ([10, 10, 10, 20], "empty box"),
        ([10, 10, 5, 20], "empty box"),
        ([-20, 0, 10, 10], "outside the 100x80 image"),
        ([0, 0, 10, 200], "outside the 100x80 image"),
        ([float("nan"), 0, 10, 10], "non-finite"),
    ],
)
def test_bad_boxes_are_refused_or_skipped(box, message):
    with pytest.raises(DataError, match=f"img.jpg: cat 1 .*{message}"):
        make_record(
            "1", 100, 80, [[1, 1, 5, 5], box], [1, 1], ("cat",), path="img.jpg", object_names=["cat 0", "cat 1"]
        )
    skipped = SkipCounter()
    record = make_record("1", 100, 80, [[1, 1, 5, 5], box], [1, 1], ("cat",), skip_invalid=True, skipped=skipped)
    assert len(record.boxes) == 1 and skipped.objects == 1


def test_one_pixel_of_slack_is_clipped_and_labels_are_checked():
    record = make_record("1", 100, 80, [[-0.5, 0, 100.5, 80.7]], [1], ("cat",))
    np.testing.assert_array_equal(record.boxes, [[0, 0, 100, 80]])
    with pytest.raises(DataError, match="label 2, not in 1..1"):
        make_record("1", 100, 80, [[0, 0, 5, 5]], [2], ("cat",))


def test_coco_reader(tmp_path):
    write_jpeg(tmp_path / "img" / "a.jpg", 64, 48)
    write_jpeg(tmp_path / "img" / "b.jpg", 32, 32)
    doc = {
        "images": [{"id": 7, "file_name": "a.jpg", "width": 64, "height": 48},
                   {"id": 9, "file_name": "b.jpg", "width": 32, "height": 32}],
        "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 18, "bbox": [2, 3, 10, 20], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 64, 48], "iscrowd": 1},
        ],
    }  # fmt: skip
    (tmp_path / "ann.json").write_text(json.dumps(doc))
    records, cats = read_coco(tmp_path / "ann.json", tmp_path / "img")
    assert cats.ids == (1, 18) and cats.names == ("person", "dog")
    assert cats.label_of(18) == 2 and cats.category_of(2) == 18
    a = records[0]
    np.testing.assert_array_equal(a.boxes, [[2, 3, 12, 23], [0, 0, 64, 48]])
    assert a.labels.tolist() == [2, 1] and a.iscrowd.tolist() == [False, True]
    boxes, labels = a.training_targets()
    assert labels.tolist() == [2] and boxes.shape == (1, 4)
    assert records[1].boxes.shape == (0, 4)

    doc["annotations"].append({"id": 3, "image_id": 9, "category_id": 5, "bbox": [0, 0, 1, 1]})
    (tmp_path / "ann.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match="annotation 3 of image 9 has unknown category 5"):
        read_coco(tmp_path / "ann.json", tmp_path / "img")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DataError, match=r"bad\.json: not valid JSON"):
        read_coco(tmp_path / "bad.json", tmp_path / "img")


def test_shapes_on_disk_round_trip(tmp_path):
    ann = write_shapes(tmp_path, "val", 12, seed=5, image_size=96)
    records, cats = read_coco(ann, tmp_path / "val")
    assert cats.names == SHAPE_CLASSES and len(records) == 12
    for i, record in enumerate(records):
        sample = draw_sample(5, i, 96)
        np.testing.assert_allclose(record.boxes, sample.boxes, atol=1e-4)
        assert record.labels.tolist() == sample.labels.tolist()
    stamp = ann.stat().st_mtime_ns
    write_shapes(tmp_path, "val", 12, seed=5, image_size=96)  # same settings: left alone
    assert ann.stat().st_mtime_ns == stamp


def test_skip_summary_groups_by_kind():
    skipped = SkipCounter()
    boxes = [[10, 10, 10, 20], [5, 5, 2, 9], [-50, 0, 10, 10], [1, 1, 5, 5]]
    record = make_record("1", 100, 80, boxes, [1, 1, 1, 1], ("cat",), skip_invalid=True, skipped=skipped)
    assert len(record.boxes) == 1
    assert skipped.reasons == {"empty box": 2, "box outside the image": 1}
    assert skipped.summary() == "skipped 0 images and 3 objects (box outside the image: 1, empty box: 2)"
