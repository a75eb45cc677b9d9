import pytest

from pipeline import evaluation
from pipeline.config import EvalConfig
from pipeline.prepare import PrepareRequest, prepare_shards
from ssd_core.data.shards import read_manifest
from tests.ssd_core.test_export import varied_model


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evaluation")
    request = PrepareRequest("shapes", str(tmp / "shapes"), str(tmp / "shards"), shapes_train=4, shapes_val=12,
                             shard_size=5)  # fmt: skip
    prepare_shards(request, log=lambda line: None)
    return str(tmp / "shards")


def test_chunked_evaluation_equals_the_whole_split_at_once(shards, monkeypatch):
    names = tuple(read_manifest(shards)["class_names"])
    model = varied_model(len(names) + 1)
    whole, table = evaluation.evaluate_split(model, names, shards, "val", EvalConfig(), log=lambda line: None)
    monkeypatch.setattr(evaluation, "CHUNK", 5)  # 12 images: chunks of 5, 5 and 2, across 3 shards
    seen = []
    chunked, _ = evaluation.evaluate_split(model, names, shards, "val", EvalConfig(), log=lambda line: None,
                                           progress=lambda done, total: seen.append((done, total)))  # fmt: skip
    # Batches of another size round differently in the last bits: equal within that.
    assert chunked == pytest.approx(whole, abs=1e-4) and "voc/mAP" in whole and "coco/AP" in whole
    assert seen == [(5, 12), (10, 12), (12, 12)]
    assert names[0] in table


def test_classes_that_differ_from_the_model_are_an_error(shards):
    with pytest.raises(ValueError, match="classes differ"):
        evaluation.evaluate_split(varied_model(3), ("a", "b"), shards, "val", EvalConfig())
