"""cluster.yaml against the Ray cluster launcher's own schema (ray/autoscaler/ray-schema.json)."""

from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[1] / "cluster.yaml"


def validate(config: dict) -> None:
    """What `ray up` does before it launches anything: merge the provider's defaults,
    then check against the launcher's JSON schema (raises ValidationError naming the key)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(config))


def test_cluster_yaml_is_valid_for_the_launcher():
    validate(yaml.safe_load(CLUSTER.read_text()))


def test_cluster_yaml_keeps_its_promises():
    config = yaml.safe_load(CLUSTER.read_text())
    nodes = config["available_node_types"]
    assert config["head_node_type"] == "head" and nodes["head"]["resources"] == {"CPU": 0}
    assert {"gpu_worker", "cpu_worker"} <= set(nodes)
    assert config["docker"]["image"].startswith("rayproject/ray:2.60.")  # not ray-ml: it stopped at 2.49
    assert any("pip install" in c and "/home/ray/ssd" in c for c in config["setup_commands"])
    mlflow = " ".join(config["head_setup_commands"])
    assert "mlflow server" in mlflow and "s3://" in mlflow and "sqlite" not in mlflow  # durable store, bucket artifacts
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in c for c in starts if "ray start" in c)


def test_a_broken_config_is_rejected():
    import jsonschema

    config = yaml.safe_load(CLUSTER.read_text())
    config["available_node_types"]["gpu_worker"]["max_wokers"] = 4  # a typo
    with pytest.raises(jsonschema.ValidationError, match="max_wokers"):
        validate(config)
