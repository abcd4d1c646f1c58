"""The sampler thread keeps the latest GPU inventory and a short history, off any event loop."""

from __future__ import annotations

import threading
from collections.abc import Iterable

import pytest
from fake_nvml import GiB, three_gpus

from koboldtui.gpu.nvml import GpuInventory, read_inventory, set_nvml_module
from koboldtui.gpu.sampler import GpuSampler


@pytest.fixture
def fake():
    module = three_gpus()
    set_nvml_module(module)
    yield module
    set_nvml_module(None)


def test_history_is_bounded_and_oldest_first(fake) -> None:
    ticks = iter(range(100))
    sampler = GpuSampler(
        history=3, reader=lambda pids: read_inventory(pids, clock=lambda: float(next(ticks)))
    )
    for used in (1, 2, 3, 4):
        fake.gpu("GPU-bbbb-8g").used = used * GiB
        sampler.sample_now()
    points = sampler.history("GPU-bbbb-8g")
    assert [p.memory_used for p in points] == [2 * GiB, 3 * GiB, 4 * GiB]
    assert [p.taken_at for p in points] == [1.0, 2.0, 3.0]
    assert sampler.history("GPU-unknown") == ()
    assert sampler.latest().by_uuid("GPU-bbbb-8g").memory_used == 4 * GiB


def test_thread_samples_until_stopped_and_marks_our_pids(fake) -> None:
    seen: list[GpuInventory] = []
    threads: set[str] = set()
    enough = threading.Event()
    pids = {1111}

    def on_sample(inv: GpuInventory) -> None:
        seen.append(inv)
        threads.add(threading.current_thread().name)
        if len(seen) >= 3:
            enough.set()

    sampler = GpuSampler(interval_s=0.01, our_pids=lambda: pids, on_sample=on_sample).start()
    assert enough.wait(5), "the sampler thread took no samples"
    sampler.stop()
    assert not sampler.running
    assert threads == {"koboldtui-gpu-sampler"}
    count = sampler.samples_taken
    assert sampler.latest().gpus[0].processes[0].is_ours
    enough.clear()
    assert not enough.wait(0.05)
    assert sampler.samples_taken == count  # nothing after stop


def test_poke_samples_without_waiting_for_the_interval(fake) -> None:
    second = threading.Event()
    calls = []

    def reader(pids: Iterable[int]) -> GpuInventory:
        calls.append(1)
        if len(calls) == 2:
            second.set()
        return read_inventory(pids)

    sampler = GpuSampler(interval_s=3600, reader=reader).start()
    try:
        sampler.poke()
        assert second.wait(5), "poke did not trigger a sample"
    finally:
        sampler.stop()


def test_failing_callbacks_do_not_stop_sampling(fake) -> None:
    def bad_pids() -> Iterable[int]:
        raise RuntimeError("store locked")

    def bad_callback(inv: GpuInventory) -> None:
        raise RuntimeError("ui bug")

    sampler = GpuSampler(our_pids=bad_pids, on_sample=bad_callback)
    inv = sampler.sample_now()
    assert len(inv.gpus) == 3 and sampler.latest() is inv


def test_bad_interval_is_refused() -> None:
    with pytest.raises(ValueError):
        GpuSampler(interval_s=0)
