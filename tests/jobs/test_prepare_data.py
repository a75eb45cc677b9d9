import os

from jobs.prepare_data import main
from ssd_core.data.shards import read_manifest, read_shards, shard_paths


def test_shapes_to_shards_and_rerun_resumes(tmp_path, capsys):
    args = ["--source", "shapes", "--root", str(tmp_path / "shapes"), "--out", str(tmp_path / "shards"),
            "--shapes-train", "40", "--shapes-val", "10", "--shard-size", "16"]  # fmt: skip
    assert main(args) == 0
    manifest = read_manifest(tmp_path / "shards")
    assert manifest["splits"]["train"]["images"] == 40 and len(manifest["splits"]["train"]["shards"]) == 3
    assert len(list(read_shards(tmp_path / "shards", "val"))) == 10
    out = capsys.readouterr().out
    assert "train shards: 40/40 (100%)" in out and "nothing skipped" in out
    assert "3 shards at" in out and "(3 written, 0 already complete and kept)" in out
    stamps = [os.stat(p).st_mtime_ns for p in shard_paths(tmp_path / "shards", "train")]
    assert main(args) == 0
    assert [os.stat(p).st_mtime_ns for p in shard_paths(tmp_path / "shards", "train")] == stamps
    assert "(0 written, 3 already complete and kept)" in capsys.readouterr().out
    fewer = [*args[:6], "--shapes-train", "20", *args[8:]]  # the set regenerated smaller
    assert main(fewer) == 0
    out = capsys.readouterr().out
    assert "(2 written, 0 already complete and kept; 3 stale shard files of an earlier run removed)" in out
    assert sorted(p.name for p in (tmp_path / "shards").glob("train-*")) == [
        "train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]  # fmt: skip


def test_bad_dataset_path_is_a_clear_error(tmp_path, capsys):
    assert main(["--source", "voc", "--root", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "split file missing" in capsys.readouterr().err
