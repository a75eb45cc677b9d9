"""Export an SSD to ONNX (box decoding inside; NMS with --nms), verified with onnxruntime.

    python -m jobs.export --model models:/shapes-light@champion --out models/ssd.onnx [--nms]

``--model``: an MLflow model URI, a pulled model folder or a training checkpoint folder.
The graph is compared with the eager model's outputs before it is written; a mismatch is
an error and nothing is written. ``--tracking-uri`` (or MLFLOW_TRACKING_URI; default
``./mlruns/mlflow.db``) for MLflow URIs.
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument("--nms", action="store_true", help="NMS in the graph (one image per call)")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"))
    args = parser.parse_args(argv)
    from jobs.paths import default_tracking_uri, is_mlflow_uri
    from pipeline.evaluation import load_any
    from pipeline.model_store import ModelLoadError
    from pipeline.onnx_export import ExportMismatch, export_verified

    if is_mlflow_uri(args.model):
        import mlflow

        mlflow.set_tracking_uri(default_tracking_uri(args.tracking_uri))
    try:
        model, class_names = load_any(args.model)
        result = export_verified(model, args.out, nms=args.nms)
    except (ModelLoadError, ExportMismatch, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    kind = "boxes [K, 4], scores [K], labels [K] for one image" if args.nms else "boxes [B, P, 4], scores [B, P, C]"
    check = (f"{result['agreement']:.1%} of detections equal eager's" if args.nms
             else f"max |ONNX - eager| {result['max_abs_diff']:.1e}")  # fmt: skip
    print(f"wrote {result['path']}: images [B, 3, {model.image_size}, {model.image_size}] -> {kind}; "
          f"classes {', '.join(class_names)}; {check}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
