"""Parquet shards of detection records, readable from a local path or any filesystem
pyarrow understands (``s3://``, ``gs://``, ...), so a cluster reads the same data.

Layout under the output URI::

    {split}-00000-of-00012.parquet ... manifest.json

One row per image: ``image_id`` (string), ``image`` (encoded bytes), ``width``,
``height`` (int32), ``boxes`` (list<float32>, N * 4 xyxy pixels), ``labels``
(list<int64>), ``difficult``, ``iscrowd`` (list<bool>). ``manifest.json`` holds the
class names, the source, and per split the shard files and counts per class.

Writing decodes every image once, so a corrupt, truncated or mis-sized file fails here
with its path named, not deep inside a training epoch. Each local shard is written under a
temporary name and renamed when complete (an object store publishes an object only when
it is closed), and the manifest comes last; rerunning skips the shards already complete,
so an interrupted conversion resumes. A rerun whose split changed size (so its shards
are named ``-of-`` another count) removes the split's shards the new manifest no longer
lists, after writing it, so the folder holds one copy of the data.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch
from torchvision.io import decode_image

from ssd_core.data.record import DataError, DetectionRecord

SCHEMA = pa.schema([
    ("image_id", pa.string()),
    ("image", pa.binary()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("boxes", pa.list_(pa.float32())),
    ("labels", pa.list_(pa.int64())),
    ("difficult", pa.list_(pa.bool_())),
    ("iscrowd", pa.list_(pa.bool_())),
])  # fmt: skip
MANIFEST = "manifest.json"


def shard_name(split: str, index: int, count: int) -> str:
    """The file name of shard ``index`` of ``count`` of ``split``."""
    return f"{split}-{index:05d}-of-{count:05d}.parquet"


def shard_name_pattern(split: str) -> re.Pattern[str]:
    """Matches :func:`shard_name`'s names for ``split`` of any count, and their ``.tmp``."""
    return re.compile(rf"{re.escape(split)}-\d{{5}}-of-\d{{5}}\.parquet(\.tmp)?")


def resolve(uri: str | Path) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the path inside it, for a local path or a URI."""
    text = str(uri)
    if "://" in text:
        return pafs.FileSystem.from_uri(text)
    return pafs.LocalFileSystem(), str(Path(text).resolve())


def with_scheme(path: str, like: str) -> str:
    """``path`` as a filesystem listed it (pyarrow and Ray give ``s3://bucket/key`` as
    ``bucket/key``, which reads as a relative local path) with the scheme of ``like`` (the
    URI or local path it was found under) put back; a local path, or one with a scheme
    already, as it is."""
    if "://" in like and "://" not in path:
        return f"{like.split('://', 1)[0]}://{path}"
    return path


def encoded_image(record: DetectionRecord) -> bytes:
    """The record's image bytes, checked to decode to the annotated size."""
    data = record.image_bytes
    if data is None:
        if record.path is None:
            raise DataError(f"image {record.image_id}: neither a path nor bytes")
        try:
            data = Path(record.path).read_bytes()
        except OSError as err:
            raise DataError(f"{record.path}: cannot read image ({err.strerror})") from None
    try:
        image = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    except RuntimeError as err:
        raise DataError(f"{record.source}: corrupt or unsupported image ({str(err).splitlines()[0]})") from None
    if (image.shape[-1], image.shape[-2]) != (record.width, record.height):
        raise DataError(
            f"{record.source}: image is {image.shape[-1]}x{image.shape[-2]} but annotated "
            f"{record.width}x{record.height}"
        )
    return data


def _table(records: Sequence[DetectionRecord]) -> pa.Table:
    return pa.table(
        {
            "image_id": [r.image_id for r in records],
            "image": [encoded_image(r) for r in records],
            "width": [r.width for r in records],
            "height": [r.height for r in records],
            "boxes": [r.boxes.reshape(-1).tolist() for r in records],
            "labels": [r.labels.tolist() for r in records],
            "difficult": [r.difficult.tolist() for r in records],
            "iscrowd": [r.iscrowd.tolist() for r in records],
        },
        schema=SCHEMA,
    )


def _is_complete(fs: pafs.FileSystem, path: str, ids: list[str]) -> bool:
    """Does ``path`` hold exactly the rows of ``ids`` (in order)?"""
    if fs.get_file_info(path).type != pafs.FileType.File:
        return False
    try:
        with fs.open_input_file(path) as f:
            existing = pq.read_table(f, columns=["image_id"]).column("image_id").to_pylist()
    except (pa.ArrowInvalid, OSError):
        return False
    return existing == ids


def write_shards(
    records: Sequence[DetectionRecord],
    out: str | Path,
    split: str,
    shard_size: int = 1000,
    source: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Write ``records`` as the shards of ``split`` under ``out`` and update the manifest.

    Returns:
        The split's manifest entry (shard files, image and object counts, per-class counts),
        plus ``written``: how many shards this call wrote (the others were already complete
        and were kept), and ``removed``: how many of the split's files no longer listed
        (an earlier count's shards, leftover ``.tmp`` files) it deleted.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    if not records:
        raise DataError(f"no records to write for split {split!r}")
    fs, root = resolve(out)
    fs.create_dir(root, recursive=True)
    local = isinstance(fs, pafs.LocalFileSystem)
    count = math.ceil(len(records) / shard_size)
    files, written = [], 0
    for i in range(count):
        chunk = records[i * shard_size : (i + 1) * shard_size]
        name = shard_name(split, i, count)
        path = f"{root}/{name}"
        files.append(name)
        if not _is_complete(fs, path, [r.image_id for r in chunk]):
            target = f"{path}.tmp" if local else path
            with fs.open_output_stream(target) as f:
                pq.write_table(_table(chunk), f, compression="none")  # JPEG bytes do not compress
            if local:
                fs.move(target, path)
            written += 1
        if progress is not None:
            progress(min((i + 1) * shard_size, len(records)), len(records))

    class_names = list(records[0].class_names)
    labels = np.concatenate([r.labels for r in records])
    per_class = np.bincount(labels, minlength=len(class_names) + 1)[1:]
    entry = {
        "shards": files,
        "images": len(records),
        "objects": int(len(labels)),
        "per_class": {name: int(n) for name, n in zip(class_names, per_class)},
    }
    manifest = read_manifest(out) if fs.get_file_info(f"{root}/{MANIFEST}").type == pafs.FileType.File else {}
    if manifest.get("class_names", class_names) != class_names:
        raise DataError(f"{out}: existing shards have classes {manifest['class_names']}, these have {class_names}")
    manifest.update({"format": 1, "class_names": class_names})
    manifest.setdefault("source", {})[split] = source
    manifest.setdefault("splits", {})[split] = entry
    with fs.open_output_stream(f"{root}/{MANIFEST}") as f:
        f.write(json.dumps(manifest, indent=2).encode())
    # Only after the manifest names the new files: a crash before this line leaves the old
    # manifest's shards in place, so whichever manifest is there still reads.
    removed = remove_unlisted(fs, root, split, set(files))
    return {**entry, "written": written, "removed": removed}


def remove_unlisted(fs: pafs.FileSystem, root: str, split: str, listed: set[str]) -> int:
    """Delete ``split``'s shard files (and leftover ``.tmp`` files) under ``root`` that are
    not in ``listed``; returns how many. Only names this module writes are touched
    (:func:`shard_name_pattern`), never another split's or a user's file."""
    pattern = shard_name_pattern(split)
    removed = 0
    for info in fs.get_file_info(pafs.FileSelector(root)):
        name = info.base_name
        if info.type == pafs.FileType.File and pattern.fullmatch(name) and name not in listed:
            fs.delete_file(info.path)
            removed += 1
    return removed


def read_manifest(out: str | Path) -> dict[str, Any]:
    fs, root = resolve(out)
    try:
        with fs.open_input_stream(f"{root}/{MANIFEST}") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        raise DataError(f"{out}: no {MANIFEST}; were shards written here?") from None


def shard_paths(out: str | Path, split: str) -> list[str]:
    """The URIs (or local paths) of a split's shards, from the manifest."""
    manifest = read_manifest(out)
    if split not in manifest.get("splits", {}):
        raise DataError(f"{out}: no split {split!r} (have: {', '.join(manifest.get('splits', {}))})")
    base = str(out).rstrip("/")
    return [f"{base}/{name}" for name in manifest["splits"][split]["shards"]]


def check_shards(out: str | Path, split: str) -> int:
    """Open every shard's footer (not its data): each listed file exists, is Parquet, and
    has the shard schema; the split's image count. Cheap enough to run before a
    distributed job starts, so a bad shard fails there with its path named.

    Raises:
        DataError: naming the first missing or unreadable shard.
    """
    images = 0
    for uri in shard_paths(out, split):
        fs, path = resolve(uri)
        try:
            with fs.open_input_file(path) as f:
                meta = pq.ParquetFile(f)
                schema, rows = meta.schema_arrow, meta.metadata.num_rows
        except FileNotFoundError:
            raise DataError(f"{uri}: shard listed in the manifest is missing") from None
        except (pa.ArrowInvalid, OSError) as err:
            raise DataError(f"{uri}: unreadable shard ({str(err).splitlines()[0]})") from None
        missing = [name for name in SCHEMA.names if name not in schema.names]
        if missing:
            raise DataError(f"{uri}: not an SSD shard (no column {missing[0]!r})")
        images += rows
    return images


def row_to_record(row: dict[str, Any], class_names: Sequence[str]) -> DetectionRecord:
    """A shard row (as ``pyarrow`` ``to_pylist`` or Ray Data give it) -> a record."""
    n = len(row["labels"])
    return DetectionRecord(
        image_id=row["image_id"],
        width=int(row["width"]),
        height=int(row["height"]),
        boxes=np.asarray(row["boxes"], dtype=np.float32).reshape(n, 4),
        labels=np.asarray(row["labels"], dtype=np.int64),
        difficult=np.asarray(row["difficult"], dtype=bool),
        iscrowd=np.asarray(row["iscrowd"], dtype=bool),
        image_bytes=row["image"],
        class_names=tuple(class_names),
    )


def read_shards(out: str | Path, split: str) -> Iterator[DetectionRecord]:
    """The records of ``split``, shard by shard (one shard in memory at a time)."""
    class_names = read_manifest(out)["class_names"]
    for uri in shard_paths(out, split):
        fs, path = resolve(uri)
        try:
            with fs.open_input_file(path) as f:
                table = pq.read_table(f, schema=SCHEMA)
        except FileNotFoundError:
            raise DataError(f"{uri}: shard listed in the manifest is missing") from None
        except (pa.ArrowInvalid, OSError) as err:
            raise DataError(f"{uri}: unreadable shard ({err})") from None
        for row in table.to_pylist():
            yield row_to_record(row, class_names)
