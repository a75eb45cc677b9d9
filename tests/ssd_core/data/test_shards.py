import os
from pathlib import Path

import numpy as np
import pytest

from ssd_core.data.coco import read_coco
from ssd_core.data.record import DataError, make_record
from ssd_core.data.shapes import write_shapes
from ssd_core.data.shards import read_manifest, read_shards, shard_paths, with_scheme, write_shards
from ssd_core.data.voc import read_voc
from tests.ssd_core.data.fixtures import write_jpeg, write_voc


@pytest.fixture
def records(tmp_path):
    ann = write_shapes(tmp_path / "shapes", "train", 23, seed=2, image_size=64)
    return read_coco(ann, tmp_path / "shapes" / "train")[0]


def assert_same(a, b):
    assert a.image_id == b.image_id and (a.width, a.height) == (b.width, b.height)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    for field in ("labels", "difficult", "iscrowd"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.class_names == b.class_names


def test_round_trip_loses_nothing(records, tmp_path):
    out = tmp_path / "shards"
    entry = write_shards(records, out, "train", shard_size=5, source="shapes seed 2")
    assert entry["images"] == 23 and len(entry["shards"]) == 5 and entry["written"] == 5
    assert "written" not in read_manifest(out)["splits"]["train"]  # what one call did, not the data's
    assert entry["objects"] == sum(len(r.labels) for r in records) == sum(entry["per_class"].values())
    back = list(read_shards(out, "train"))
    assert len(back) == 23
    for a, b in zip(records, back):
        assert_same(a, b)
        assert b.image_bytes == Path(a.path).read_bytes()
    assert list(read_shards(f"file://{out}", "train"))[0].image_id == records[0].image_id


def test_voc_difficult_survives(tmp_path):
    write_voc(tmp_path, "2007", "test", {"a": (40, 30, [("dog", [1, 1, 20, 20], 1), ("cat", [5, 5, 40, 30], 0)])})
    records = read_voc(tmp_path, [("2007", "test")])
    write_shards(records, tmp_path / "s", "test")
    assert list(read_shards(tmp_path / "s", "test"))[0].difficult.tolist() == [True, False]


def test_rerun_resumes_and_rewrites_only_what_is_missing(records, tmp_path):
    out = tmp_path / "shards"
    write_shards(records, out, "train", shard_size=5)
    paths = shard_paths(out, "train")
    stamps = [os.stat(p).st_mtime_ns for p in paths]
    os.remove(paths[2])
    Path(paths[3]).write_bytes(b"PAR1 truncated")  # a shard cut short by a crash
    (out / "train-00000-of-00005.parquet.tmp").write_bytes(b"partial")  # a leftover temp file
    assert write_shards(records, out, "train", shard_size=5)["written"] == 2
    after = [os.stat(p).st_mtime_ns for p in paths]
    assert after[0] == stamps[0] and after[1] == stamps[1] and after[4] == stamps[4]
    assert len(list(read_shards(out, "train"))) == 23
    assert not (out / "train-00000-of-00005.parquet.tmp").exists()


def test_rerun_with_another_count_removes_the_old_shards_only(records, tmp_path):
    out = tmp_path / "shards"
    write_shards(records, out, "train", shard_size=5)  # 5 shards, -of-00005
    write_shards(records[:4], out, "val", shard_size=5)
    (out / "notes.parquet").write_bytes(b"a user's file")
    entry = write_shards(records[:12], out, "train", shard_size=5)  # the source lost images
    assert entry["removed"] == 5 and entry["written"] == 3
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json", "notes.parquet", "train-00000-of-00003.parquet", "train-00001-of-00003.parquet",
        "train-00002-of-00003.parquet", "val-00000-of-00001.parquet",
    ]  # fmt: skip
    assert [r.image_id for r in read_shards(out, "train")] == [r.image_id for r in records[:12]]
    assert len(list(read_shards(out, "val"))) == 4
    assert write_shards(records[:12], out, "train", shard_size=5)["removed"] == 0


def test_corrupt_and_mis_sized_images_are_named(tmp_path):
    write_jpeg(tmp_path / "ok.jpg", 40, 30)
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    cut = make_record("cut", 40, 30, [[1, 1, 5, 5]], [1], ("a",), path=str(tmp_path / "cut.jpg"))
    with pytest.raises(DataError, match=r"cut\.jpg: corrupt"):
        write_shards([cut], tmp_path / "s", "train")
    wrong = make_record("ok", 41, 30, [[1, 1, 5, 5]], [1], ("a",), path=str(tmp_path / "ok.jpg"))
    with pytest.raises(DataError, match=r"ok\.jpg: image is 40x30 but annotated 41x30"):
        write_shards([wrong], tmp_path / "s", "train")
    missing = make_record("m", 4, 3, [], [], ("a",), path=str(tmp_path / "nope.jpg"))
    with pytest.raises(DataError, match=r"nope\.jpg: cannot read image"):
        write_shards([missing], tmp_path / "s", "train")


def test_missing_data_fails_fast(records, tmp_path):
    with pytest.raises(DataError, match="no manifest.json"):
        list(read_shards(tmp_path / "nowhere", "train"))
    write_shards(records, tmp_path / "s", "train", shard_size=10)
    with pytest.raises(DataError, match="no split 'val'"):
        list(read_shards(tmp_path / "s", "val"))
    shard_paths_ = shard_paths(tmp_path / "s", "train")
    os.remove(shard_paths_[1])
    with pytest.raises(DataError, match="shard listed in the manifest is missing"):
        list(read_shards(tmp_path / "s", "train"))
    assert read_manifest(tmp_path / "s")["class_names"][0] == "circle"


@pytest.mark.parametrize(
    ("listed", "like", "want"),
    [
        ("bucket/in/a.jpg", "s3://bucket/in", "s3://bucket/in/a.jpg"),  # as Ray Data and pyarrow list it
        ("bucket/runs/r/epoch-0002", "gs://bucket/runs", "gs://bucket/runs/r/epoch-0002"),
        ("/data/in/a.jpg", "/data/in", "/data/in/a.jpg"),
        ("s3://bucket/in/a.jpg", "s3://bucket/in", "s3://bucket/in/a.jpg"),  # kept as it is
    ],
)
def test_with_scheme_gives_a_listed_path_its_uri_back(listed, like, want):
    assert with_scheme(listed, like) == want
