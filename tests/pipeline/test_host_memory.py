"""The workers' malloc settings (pipeline/host_memory.py): they take effect, and
they stop a training step in a thread from faulting its activations in afresh."""

import ctypes.util
import os
import platform
import subprocess
import sys

import pytest

from pipeline.host_memory import MALLOC_TUNABLES, malloc_env

glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc" or not ctypes.util.find_library("c"),
    reason="glibc malloc settings",
)

# Light-model training steps in a thread other than the main one, as Ray Train V2 runs
# them; prints the minor page faults of the timed steps.
STEPS = """
import resource, sys, threading
import torch
from pipeline.host_memory import keep_freed_memory_here
from ssd_core.models import ssd_light

if sys.argv[1] == "mallopt":
    assert keep_freed_memory_here()

def train():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    net = ssd_light(num_classes=6, image_size=128).to(memory_format=torch.channels_last)
    x = torch.randn(16, 3, 128, 128).to(memory_format=torch.channels_last)
    def step():
        loc, conf = net(x)
        (loc.square().mean() + conf.square().mean()).backward()
    for _ in range(3):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(8):
        step()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

thread = threading.Thread(target=train)
thread.start()
thread.join()
"""


def faults_of_eight_steps(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if mode == "env":
        env.update(malloc_env())
    out = subprocess.run([sys.executable, "-c", STEPS, mode], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


def test_the_variable_carries_the_three_settings():
    assert malloc_env() == {"GLIBC_TUNABLES": MALLOC_TUNABLES}
    settings = dict(item.split("=") for item in MALLOC_TUNABLES.split(":"))
    assert settings == {
        "glibc.malloc.arena_max": "1",
        "glibc.malloc.trim_threshold": str(1 << 30),
        "glibc.malloc.mmap_threshold": str(32 << 20),  # glibc's upper bound: more would be refused
    }


@glibc
def test_steps_in_a_thread_stop_faulting_their_memory_in_afresh():
    default = faults_of_eight_steps("default")
    # Measured: thousands a step with glibc's defaults, ~100-200 with the settings.
    assert default > 8 * 500
    assert faults_of_eight_steps("env") * 5 < default  # a worker started with the variable
    assert faults_of_eight_steps("mallopt") * 5 < default  # this process, set at run time
