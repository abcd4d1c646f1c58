"""The machine and per-instance readings the panel draws, taken from this real machine with psutil."""

from __future__ import annotations

import os
import subprocess
import sys
import time

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


def test_a_wrapper_counts_the_server_it_started() -> None:
    """A command instance may be a shell running the real server: its usage includes the child."""
    shell = subprocess.Popen(["/bin/sh", "-c", f'"{sys.executable}" -c "$0"; :', HOLD])
    try:
        sampler = ProcessSampler()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            usage = sampler.sample({"wrapped": shell.pid})["wrapped"]
            if usage is not None and usage.rss_bytes > 64 * 1024**2:
                break
            time.sleep(0.2)
        assert usage is not None and usage.rss_bytes > 64 * 1024**2
    finally:
        import psutil

        for child in psutil.Process(shell.pid).children(recursive=True):
            child.kill()
        shell.kill()
        shell.wait()
