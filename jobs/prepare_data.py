"""Convert a dataset into Parquet shards (train and val splits plus a manifest).

    python -m jobs.prepare_data --source shapes --root data/shapes --out data/shards/shapes
    python -m jobs.prepare_data --source voc --root /data/VOCdevkit --out s3://bucket/voc-shards
    python -m jobs.prepare_data --source coco --root /data/coco --out /data/coco-shards

Rerunning with the same arguments resumes: shards already complete are kept.
"""

from __future__ import annotations

import argparse
import sys

from pipeline.prepare import PrepareRequest, prepare_shards
from ssd_core.data.record import DataError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.prepare_data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--source", required=True, choices=["shapes", "voc", "coco"])
    parser.add_argument("--root", required=True, help="dataset folder (shapes: where to generate it)")
    parser.add_argument("--out", required=True, help="output folder or URI (s3://, gs://, ...)")
    parser.add_argument("--shard-size", type=int, default=1000, help="images per shard (default 1000)")
    parser.add_argument("--skip-invalid", action="store_true",
                        help="drop and count bad objects and missing images instead of stopping")  # fmt: skip
    parser.add_argument("--shapes-train", type=int, default=2000)
    parser.add_argument("--shapes-val", type=int, default=300)
    parser.add_argument("--shapes-seed", type=int, default=0)
    args = parser.parse_args(argv)
    request = PrepareRequest(
        args.source, args.root, args.out, args.shard_size, args.skip_invalid,
        args.shapes_train, args.shapes_val, args.shapes_seed,
    )  # fmt: skip
    try:
        prepare_shards(request)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
