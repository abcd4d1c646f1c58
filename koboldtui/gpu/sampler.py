"""Samples NVML on its own thread so the UI never blocks on the driver, and keeps history for sparklines."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from koboldtui.gpu.nvml import GpuInventory, read_inventory

_log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 1.0
DEFAULT_HISTORY = 120


@dataclass(frozen=True)
class GpuSample:
    """One point of a GPU's history: what the sparklines draw."""

    taken_at: float
    memory_used: int | None
    utilization_gpu: int | None
    temperature_c: int | None
    power_draw_w: float | None


class GpuSampler:
    """A daemon thread reading the GPU inventory every ``interval_s`` seconds; stop() ends it.

    ``latest()`` and ``history(uuid)`` are safe from any thread and return immutable
    values. ``our_pids`` is called each sample so newly started instances are marked.
    """

    def __init__(
        self,
        interval_s: float = DEFAULT_INTERVAL_S,
        history: int = DEFAULT_HISTORY,
        our_pids: Callable[[], Iterable[int]] = lambda: (),
        reader: Callable[[Iterable[int]], GpuInventory] = read_inventory,
        on_sample: Callable[[GpuInventory], None] | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("the sampling interval must be > 0 seconds")
        self.interval_s = interval_s
        self._maxlen = history
        self._our_pids = our_pids
        self._reader = reader
        self._on_sample = on_sample
        self._lock = threading.Lock()
        self._latest: GpuInventory | None = None
        self._history: dict[str, deque[GpuSample]] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.samples_taken = 0

    def start(self) -> GpuSampler:
        """Start the thread (idempotent); returns self."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name="koboldtui-gpu-sampler", daemon=True
            )
            self._thread.start()
        return self

    def stop(self, timeout: float | None = 5.0) -> None:
        """Ask the thread to end and wait for it (it ends after the read in progress)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        """Whether the sampling thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def sample_now(self) -> GpuInventory:
        """Take one sample on the calling thread (for the first paint, and for tests)."""
        try:
            pids = list(self._our_pids())
        except Exception:  # noqa: BLE001 - a failing pid source must not kill sampling
            pids = []
        inventory = self._reader(pids)
        with self._lock:
            self._latest = inventory
            for gpu in inventory.gpus:
                points = self._history.get(gpu.uuid)
                if points is None:
                    points = self._history[gpu.uuid] = deque(maxlen=self._maxlen)
                points.append(
                    GpuSample(
                        inventory.taken_at,
                        gpu.memory_used,
                        gpu.utilization_gpu,
                        gpu.temperature_c,
                        gpu.power_draw_w,
                    )
                )
            self.samples_taken += 1
        if self._on_sample is not None:
            try:
                self._on_sample(inventory)
            except Exception:  # noqa: BLE001 - a UI callback bug must not stop telemetry
                _log.exception("the GPU sample callback failed")
        return inventory

    def poke(self) -> None:
        """Sample again now instead of waiting for the interval (after a start/stop)."""
        self._wake.set()

    def latest(self) -> GpuInventory | None:
        """The newest inventory, or None before the first sample."""
        with self._lock:
            return self._latest

    def history(self, uuid: str) -> tuple[GpuSample, ...]:
        """This GPU's recent samples, oldest first (empty if never seen)."""
        with self._lock:
            return tuple(self._history.get(uuid, ()))

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.sample_now()
            # Re-arm after the read finishes, so slow reads never overlap or pile up.
            remaining = self.interval_s - (time.monotonic() - started)
            if remaining > 0:
                self._wake.wait(remaining)
            self._wake.clear()
