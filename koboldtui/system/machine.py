"""Whole-machine gauges (CPU %, RAM, load average) with a minute of history for sparklines.

On a box without a GPU these are the numbers that say whether a model will run well, so
the panel shows them next to the reason it runs on the CPU. Readings are taken by the
panel's poll worker (never on the UI thread) and handed over as an immutable report.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from dataclasses import dataclass

import psutil

HISTORY = 60  # samples kept: a minute at the panel's 1 s hardware poll


@dataclass(frozen=True)
class MachineReport:
    """One reading of the whole machine plus the recent history, oldest first."""

    cpu_pct: float | None  # all cores together, 0..100; None on the very first reading
    cpu_count: int
    mem_used_bytes: int
    mem_total_bytes: int
    load: tuple[float, float, float] | None  # 1, 5, 15 min; None where the OS has none
    cpu_history: tuple[float, ...] = ()
    mem_history: tuple[float, ...] = ()  # percent of total
    load_history: tuple[float, ...] = ()  # 1-minute load average

    @property
    def mem_fraction(self) -> float:
        return self.mem_used_bytes / self.mem_total_bytes if self.mem_total_bytes > 0 else 0.0

    @property
    def load_fraction(self) -> float:
        """The 1-minute load per core (1.0 = every core busy)."""
        return self.load[0] / self.cpu_count if self.load and self.cpu_count else 0.0


class MachineSampler:
    """Reads the machine on each ``sample()`` and keeps the last ``history`` readings."""

    def __init__(self, history: int = HISTORY) -> None:
        self._lock = threading.Lock()
        self._cpu: deque[float] = deque(maxlen=history)
        self._mem: deque[float] = deque(maxlen=history)
        self._load: deque[float] = deque(maxlen=history)
        self._primed = False

    def sample(self) -> MachineReport:
        """Take one reading (CPU % is measured since the previous call; the first has none)."""
        with self._lock:
            cpu = psutil.cpu_percent(interval=None)
            cpu_pct = cpu if self._primed else None
            self._primed = True
            mem = psutil.virtual_memory()
            used = int(mem.total - mem.available)  # what programs hold; page cache counts as free
            try:
                load: tuple[float, float, float] | None = tuple(os.getloadavg())  # type: ignore[assignment]
            except (AttributeError, OSError):  # Windows has no load average
                load = None
            if cpu_pct is not None:
                self._cpu.append(cpu_pct)
            self._mem.append(100.0 * used / mem.total if mem.total else 0.0)
            if load is not None:
                self._load.append(load[0])
            return MachineReport(
                cpu_pct=cpu_pct, cpu_count=psutil.cpu_count() or 1, mem_used_bytes=used,
                mem_total_bytes=int(mem.total), load=load, cpu_history=tuple(self._cpu),
                mem_history=tuple(self._mem), load_history=tuple(self._load),
            )
