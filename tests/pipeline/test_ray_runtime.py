"""The job-wide Ray setup (pipeline/ray_runtime.py)."""

import importlib

import ray

from pipeline import ray_runtime


def current_timings() -> dict:
    out = {}
    for module_name, class_name, attribute in ray_runtime.DATA_EXECUTOR_TIMINGS:
        owner = importlib.import_module(module_name)
        owner = getattr(owner, class_name) if class_name else owner
        out[(module_name, class_name, attribute)] = getattr(owner, attribute)
    return out


@ray.remote(num_cpus=0)
def timings_in_a_worker() -> dict:
    return current_timings()


def test_worker_processes_and_the_driver_get_the_executor_timings(ray_cluster):
    assert current_timings() == ray_runtime.DATA_EXECUTOR_TIMINGS
    # A fresh worker process: the setup hook ran there before the task did.
    assert ray.get(timings_in_a_worker.remote()) == ray_runtime.DATA_EXECUTOR_TIMINGS


def test_a_ray_without_those_names_is_left_alone(monkeypatch):
    missing = {
        ("ray.data._internal.execution.resource_manager", "ResourceManager", "NO_SUCH_TIMING_S"): 1.0,
        ("ray.data._internal.no_such_module", None, "X"): 1.0,
        ("ray.data._internal.execution.resource_manager", "NoSuchClass", "X"): 1.0,
    }
    monkeypatch.setattr(ray_runtime, "DATA_EXECUTOR_TIMINGS", missing)
    ray_runtime.prepare_process()
    from ray.data._internal.execution.resource_manager import ResourceManager

    assert not hasattr(ResourceManager, "NO_SUCH_TIMING_S")
