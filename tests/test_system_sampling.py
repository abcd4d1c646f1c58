"""The machine and per-instance readings the panel draws, taken from this real machine with psutil."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

from koboldtui.system.machine import MachineSampler
from koboldtui.system.processes import ProcessSampler

BUSY = "import time\nend = time.monotonic() + 30\nwhile time.monotonic() < end: pass\n"
HOLD = "import time\nblock = bytearray(64 * 1024 * 1024)\ntime.sleep(30)\n"  # 64 MiB resident


@pytest.fixture
def spawn():
    procs: list[subprocess.Popen] = []

    def start(code: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", code])
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_machine_reading_has_cpu_after_the_second_sample_and_keeps_a_bounded_history() -> None:
    sampler = MachineSampler(history=3)
    first = sampler.sample()
    assert first.cpu_pct is None  # CPU % needs two readings: never a made-up 0
    assert 0 < first.mem_used_bytes < first.mem_total_bytes
    assert first.cpu_count >= 1
    if hasattr(os, "getloadavg"):
        assert first.load is not None and len(first.load) == 3 and first.load_history == (first.load[0],)
    for _ in range(4):
        time.sleep(0.05)
        report = sampler.sample()
    assert report.cpu_pct is not None and 0.0 <= report.cpu_pct <= 100.0
    assert len(report.cpu_history) == 3 and len(report.mem_history) == 3  # the last minute, not forever
    assert 0.0 < report.mem_fraction < 1.0


def test_instance_usage_is_its_process_tree_rss_and_cpu_measured_between_polls(spawn) -> None:
    busy, holder = spawn(BUSY), spawn(HOLD)
    sampler = ProcessSampler()
    first = sampler.sample({"busy": busy.pid, "holder": holder.pid, "gone": 2**22 + 7})
    assert first["gone"] is None
    assert first["busy"] is not None and first["busy"].cpu_pct is None  # first look: no rate yet
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the 64 MiB block may take a moment to be touched
        time.sleep(0.3)
        usage = sampler.sample({"busy": busy.pid, "holder": holder.pid})
        if usage["holder"] and usage["holder"].rss_bytes > 64 * 1024**2 and (usage["busy"].cpu_pct or 0) > 10:
            break
    assert usage["holder"].rss_bytes > 64 * 1024**2
    assert usage["busy"].cpu_pct is not None and usage["busy"].cpu_pct > 10  # a spinning loop shows


def test_a_wrapper_counts_the_server_it_started_once_the_tree_is_looked_up_again() -> None:
    """A command instance may be a shell running the real server: its usage includes the child.

    The process table is read again only every ``tree_every_s`` (it is the costly part)."""
    now = [0.0]
    sampler = ProcessSampler(tree_every_s=10.0, clock=lambda: now[0])
    shell = subprocess.Popen(["/bin/sh", "-c", 'sleep 0.5; "$0" -c "$1"; :', sys.executable, HOLD])
    try:
        alone = sampler.sample({"wrapped": shell.pid})["wrapped"]
        assert alone is not None and alone.rss_bytes < 64 * 1024**2  # the shell, before the server
        deadline = time.monotonic() + 10
        while not any(c.memory_info().rss > 64 * 1024**2 for c in psutil.Process(shell.pid).children()):
            assert time.monotonic() < deadline, "the wrapped server did not start"
            time.sleep(0.1)
        cached = sampler.sample({"wrapped": shell.pid})["wrapped"]
        assert cached is not None and cached.rss_bytes < 64 * 1024**2  # the tree is not re-read yet
        now[0] += 10.0  # the next poll is due for a fresh look at the tree
        usage = sampler.sample({"wrapped": shell.pid})["wrapped"]
        assert usage is not None and usage.rss_bytes > 64 * 1024**2
    finally:
        for child in psutil.Process(shell.pid).children(recursive=True):
            child.kill()
        shell.kill()
        shell.wait()
