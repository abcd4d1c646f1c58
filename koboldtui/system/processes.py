"""RSS and CPU % of each instance: its process and everything it started, read with psutil.

A ``command`` instance may be a shell that runs the real server, and a server may fork
workers, so an instance's share is the sum over its process tree. Finding the tree reads
the whole process table, so it is redone every ``tree_every_s`` (or for a new instance),
while RSS and CPU of the known pids are read on every poll. CPU % needs two
readings: the sampler keeps one ``psutil.Process`` per pid between polls (psutil guards
against a reused pid), and reports ``None`` until it has a second reading.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class ProcessUsage:
    """What one instance's processes use now."""

    rss_bytes: int
    cpu_pct: float | None  # percent of one core, like top (200 = two cores busy); None: first look


class ProcessSampler:
    """Per-instance RSS and CPU %, measured between successive ``sample()`` calls."""

    def __init__(self, tree_every_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._procs: dict[int, psutil.Process] = {}
        self._trees: dict[int, list[int]] = {}  # root pid → its tree at the last scan
        self._scanned_at: float | None = None
        self._tree_every_s = tree_every_s
        self._clock = clock

    def _process(self, pid: int) -> tuple[psutil.Process, bool]:
        """The cached Process for ``pid`` (and whether it was seen before), or a new one."""
        proc = self._procs.get(pid)
        if proc is not None and proc.is_running():
            return proc, True
        proc = psutil.Process(pid)
        proc.cpu_percent(None)  # the first call only starts the measurement
        self._procs[pid] = proc
        return proc, False

    @staticmethod
    def _children_map() -> dict[int, list[int]]:
        """Parent pid → child pids, from one pass over the process table (not one per instance)."""
        children: dict[int, list[int]] = {}
        for proc in psutil.process_iter(["ppid"]):
            ppid = proc.info.get("ppid")
            if ppid is not None:
                children.setdefault(ppid, []).append(proc.pid)
        return children

    @staticmethod
    def _tree(root: int, children: dict[int, list[int]]) -> list[int]:
        tree, todo = [], [root]
        while todo:
            pid = todo.pop()
            if pid not in tree:
                tree.append(pid)
                todo.extend(children.get(pid, ()))
        return tree

    def sample(self, pids: Mapping[str, int]) -> dict[str, ProcessUsage | None]:
        """Usage per instance name; None where its process is gone or not ours to read."""
        out: dict[str, ProcessUsage | None] = {}
        seen: set[int] = set()
        with self._lock:
            now = self._clock()
            stale = self._scanned_at is None or now - self._scanned_at >= self._tree_every_s
            if pids and (stale or any(root not in self._trees for root in pids.values())):
                children = self._children_map()
                self._trees = {root: self._tree(root, children) for root in pids.values()}
                self._scanned_at = now
            for name, root in pids.items():
                rss, cpu, measured, alive = 0, 0.0, False, False
                for pid in self._trees.get(root, [root]):
                    try:
                        proc, known = self._process(pid)
                        with proc.oneshot():
                            rss += proc.memory_info().rss
                            pct = proc.cpu_percent(None)
                    except (psutil.NoSuchProcess, psutil.ZombieProcess):
                        self._scanned_at = None  # the tree changed: find it again next poll
                        continue
                    except psutil.AccessDenied:
                        continue
                    seen.add(pid)
                    alive = True
                    cpu += pct  # a child seen for the first time adds 0 until its second look
                    measured = measured or (pid == root and known)
                out[name] = ProcessUsage(rss, round(cpu, 1) if measured else None) if alive else None
            for pid in [p for p in self._procs if p not in seen]:
                del self._procs[pid]  # exited: forget it so a reused pid starts fresh
        return out
