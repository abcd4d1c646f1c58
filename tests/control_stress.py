"""Several controllers driving the same instances at once, with a killer: the run record must stay true.

Used by ``tests/test_control_stress.py`` (a short run) and ``bench/control_stress.py`` (a
long one). Three OS processes over one throwaway ``KOBOLDTUI_HOME``:

- two *drivers*, each its own ``Supervisor`` (as the panel and ``up`` would be), doing
  random start / stop / restart (stop, then start) on the same three instances and
  polling between operations (so each also notices exits and restarts crashed ones:
  the instances restart on failure, with a short backoff);
- a *killer* that SIGKILLs, or SIGSTOPs and later SIGCONTs, the instance processes it
  finds in the run record, at random.

Then, with everything quiet, the checks: ``ps`` agrees with the processes that exist
(same pid per instance, at most one process per instance, none that no record names),
each instance whose last operation was a stop (with no start overlapping it) is not
running, no driver saw an exception other than a start refused with a reason, and after
a final stop no stand-in process is left. The instance processes are stand-ins (a Python
one-liner that sleeps, its launch token in its arguments as ``koboldtui serve`` has it).

    python -m tests.control_stress drive HOME SEED OPS OUT MARK
    python -m tests.control_stress kill HOME SEED STOPFILE OUT
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

NAMES = ("s0", "s1", "s2")
REPO = Path(__file__).resolve().parents[1]


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["KOBOLDTUI_HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _supervisor(mark: str):  # type: ignore[no-untyped-def]
    from koboldtui.control.backoff import Backoff
    from koboldtui.control.supervisor import Supervisor
    from koboldtui.paths import app_paths
    from koboldtui.store.db import open_database
    from koboldtui.store.instances import InstanceStore

    # a SIGTERM makes it exit 1 a moment later: to a watcher, a crash that races the stop
    standin = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: (time.sleep(0.02), sys.exit(1)))\n"
        f"time.sleep(600)  # {mark}"
    )

    def build(argv: Sequence[str]) -> list[str]:
        return [sys.executable, "-S", "-c", standin, *argv]

    paths = app_paths().ensure()
    store = InstanceStore(open_database(paths.database))
    return Supervisor(
        paths, store, command_builder=build, backoff=Backoff(base_s=0.05, cap_s=0.2), stop_grace_s=5.0
    )


def setup(home: Path) -> None:
    """Three instances that restart on failure, on ports nobody uses."""
    os.environ["KOBOLDTUI_HOME"] = str(home)
    from koboldtui.control.registry import InstanceRegistry
    from koboldtui.control.spec import InstanceSpec
    from koboldtui.paths import app_paths
    from koboldtui.store.db import open_database
    from koboldtui.store.instances import InstanceStore

    paths = app_paths().ensure()
    model = home / "standin.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 64)
    registry = InstanceRegistry(InstanceStore(open_database(paths.database)), paths)
    for name in NAMES:
        with socket.socket() as probe:  # a port free now (the stand-ins never bind it)
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        registry.add(
            InstanceSpec(name=name, port=port, model=str(model), gpus="cpu", restart="on-failure")
        )


def drive(seed: int, ops: int, out: Path, mark: str) -> None:
    """Random start / stop / restart on the instances; one JSON line per operation."""
    import threading

    rng = random.Random(seed)
    sup = _supervisor(mark)
    done = threading.Event()
    lock = threading.Lock()
    with out.open("w") as log:

        def write(entry: dict) -> None:
            with lock:
                log.write(json.dumps(entry) + "\n")
                log.flush()

        def watch() -> None:  # the panel's refresh: polls from its own thread during the actions
            while not done.wait(0.005):
                began = time.time()
                try:
                    sup.poll()
                except Exception:  # noqa: BLE001
                    write({"op": "poll", "name": "*", "began": began, "ended": time.time(),
                           "outcome": "traceback", "error": traceback.format_exc()})

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            _drive_ops(sup, rng, ops, write)
        finally:
            done.set()
            watcher.join(30)


def _drive_ops(sup, rng: random.Random, ops: int, write) -> None:  # type: ignore[no-untyped-def]
    from koboldtui.control.state import StartError

    for _ in range(ops):
        op, name = rng.choice(("start", "stop", "restart")), rng.choice(NAMES)
        began = time.time()
        outcome, error = "ok", None
        try:
            if op in ("stop", "restart"):
                sup.stop(name)
            if op in ("start", "restart"):
                sup.start(name)
        except StartError as exc:
            outcome, error = "refused", str(exc)
        except Exception:  # noqa: BLE001 - what the run counts as a traceback
            outcome, error = "traceback", traceback.format_exc()
        ended = time.time()
        write({"op": op, "name": name, "began": began, "ended": ended,
               "outcome": outcome, "error": error})
        time.sleep(rng.uniform(0, 0.01))


def kill(seed: int, stopfile: Path, out: Path) -> None:
    """SIGKILL, or SIGSTOP then SIGCONT, the instance processes in the run record, until ``stopfile`` exists."""
    import sqlite3

    from koboldtui.paths import app_paths

    rng = random.Random(seed)
    db = sqlite3.connect(app_paths().database, timeout=10)
    kills = pauses = 0
    stopped: list[int] = []
    while not stopfile.exists():
        pids = [r[0] for r in db.execute("SELECT pid FROM launches WHERE pid IS NOT NULL")]
        if pids and rng.random() < 0.5:
            pid = rng.choice(pids)
            try:
                if rng.random() < 0.6:
                    os.kill(pid, signal.SIGKILL)
                    kills += 1
                else:
                    os.kill(pid, signal.SIGSTOP)
                    stopped.append(pid)
                    pauses += 1
            except OSError:
                pass
        time.sleep(rng.uniform(0.01, 0.05))
        while stopped and rng.random() < 0.7:
            try:
                os.kill(stopped.pop(0), signal.SIGCONT)
            except OSError:
                pass
    for pid in stopped:
        try:
            os.kill(pid, signal.SIGCONT)
        except OSError:
            pass
    out.write_text(json.dumps({"kills": kills, "pauses": pauses}))


def standins(mark: str) -> dict[int, bytes]:
    """Live stand-in processes of this run: pid → command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            continue
        if f"# {mark}".encode() in raw and state not in ("Z", "X"):  # not the drivers' own
            found[int(entry.name)] = raw
    return found


@dataclass
class StressResult:
    """What a run did and what the checks found (every list empty on a good run)."""

    ops: int = 0
    by_op: dict[str, int] = field(default_factory=dict)
    refused: int = 0
    kills: int = 0
    pauses: int = 0
    seconds: float = 0.0
    ops_per_s: float = 0.0
    op_ms_p50: float = 0.0
    op_ms_p99: float = 0.0
    tracebacks: list[str] = field(default_factory=list)
    ps_disagrees: list[str] = field(default_factory=list)
    running_after_stop: list[str] = field(default_factory=list)
    orphans: list[int] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    final_left: list[int] = field(default_factory=list)


def run_stress(ops_per_driver: int, *, home: Path, seed: int = 1, timeout_s: float = 600.0) -> StressResult:
    """Run the drivers and the killer, wait for them, then check; see the module docstring."""
    mark = f"kt-stress-{uuid.uuid4().hex}"
    home.mkdir(parents=True, exist_ok=True)
    env = _env(home)
    subprocess.run([sys.executable, "-m", "tests.control_stress", "setup", str(home)],
                   env=env, cwd=REPO, check=True, timeout=60)
    stopfile, killed = home / "stop-killing", home / "killer.json"
    began = time.monotonic()
    killer = subprocess.Popen([sys.executable, "-m", "tests.control_stress", "kill", str(home),
                               str(seed), str(stopfile), str(killed)], env=env, cwd=REPO,
                              stderr=subprocess.PIPE, text=True)
    logs = [home / f"driver{i}.jsonl" for i in (1, 2)]
    drivers = [
        subprocess.Popen([sys.executable, "-m", "tests.control_stress", "drive", str(home),
                          str(seed * 10 + i), str(ops_per_driver), str(log), mark],
                         env=env, cwd=REPO, stderr=subprocess.PIPE, text=True)
        for i, log in enumerate(logs, 1)
    ]
    result = StressResult()
    try:
        for proc in drivers:
            _, err = proc.communicate(timeout=max(1.0, timeout_s - (time.monotonic() - began)))
            if proc.returncode != 0 or "Traceback" in err:
                result.tracebacks.append(f"driver exit {proc.returncode}: {err[-2000:]}")
    finally:
        stopfile.write_text("")
        _, err = killer.communicate(timeout=30)
        if killer.returncode != 0 or "Traceback" in err:
            result.tracebacks.append(f"killer exit {killer.returncode}: {err[-2000:]}")
        for proc in drivers:
            if proc.poll() is None:
                proc.kill()
    result.seconds = time.monotonic() - began
    records = [json.loads(line) for log in logs if log.exists() for line in log.read_text().splitlines()]
    ops = [r for r in records if r["op"] != "poll"]
    result.ops = len(ops)
    for r in ops:
        result.by_op[r["op"]] = result.by_op.get(r["op"], 0) + 1
    result.refused = sum(r["outcome"] == "refused" for r in ops)
    result.tracebacks += [r["error"] for r in records if r["outcome"] == "traceback"]
    durations = sorted((r["ended"] - r["began"]) * 1000 for r in ops)
    if durations:
        result.op_ms_p50 = durations[len(durations) // 2]
        result.op_ms_p99 = durations[min(len(durations) - 1, int(len(durations) * 0.99))]
    result.ops_per_s = result.ops / result.seconds if result.seconds else 0.0
    if killed.exists():
        counts = json.loads(killed.read_text())
        result.kills, result.pauses = counts["kills"], counts["pauses"]
    check = subprocess.run([sys.executable, "-m", "tests.control_stress", "check", str(home), mark],
                           env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    if check.returncode != 0:
        result.tracebacks.append(f"check exit {check.returncode}: {check.stderr[-2000:]}")
        return result
    found = json.loads(check.stdout)
    result.ps_disagrees, result.orphans = found["ps_disagrees"], found["orphans"]
    result.duplicates = found["duplicates"]
    result.running_after_stop = [
        name for name in NAMES
        if _last_is_a_clean_stop(ops, name) and found["ps"][name]["state"] != "stopped"
    ]
    result.final_left = found["final_left"]
    return result


def _last_is_a_clean_stop(ops: list[dict], name: str) -> bool:
    """True when the last operation on ``name`` was a stop that no start or restart overlapped."""
    mine = [r for r in ops if r["name"] == name]
    if not mine:
        return False
    last = max(mine, key=lambda r: r["ended"])
    if last["op"] != "stop":
        return False
    return not any(
        r is not last and r["op"] in ("start", "restart") and r["ended"] > last["began"] for r in mine
    )


def check(mark: str) -> dict:
    """Run in a fresh process once everything is quiet: ``ps`` against /proc, then a final stop."""
    import contextlib
    import io

    from koboldtui.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["ps", "--json"])
    ps = {row["name"]: row for row in json.loads(out.getvalue())}
    procs = standins(mark)
    sup = _supervisor(mark)
    named = {launch.pid for launch in sup.store.launches()}
    disagree, orphans, duplicates = [], [], []
    for name in NAMES:
        theirs = [pid for pid, raw in procs.items() if f"--name\0{name}\0".encode() in raw]
        if len(theirs) > 1:
            duplicates.append(f"{name}: {theirs}")
        row = ps[name]
        running = row["state"] in ("starting", "loading", "ready", "stopping")
        if running != bool(theirs) or (running and row["pid"] not in theirs):
            disagree.append(f"{name}: ps says {row['state']} pid {row['pid']}, processes {theirs}")
    orphans = sorted(pid for pid in procs if pid not in named)
    for name in NAMES:
        sup.stop(name, grace_s=5)
    time.sleep(0.2)
    return {"ps": ps, "ps_disagrees": disagree, "orphans": orphans, "duplicates": duplicates,
            "final_left": sorted(standins(mark))}


if __name__ == "__main__":
    command, home = sys.argv[1], Path(sys.argv[2])
    os.environ["KOBOLDTUI_HOME"] = str(home)
    if command == "setup":
        setup(home)
    elif command == "drive":
        drive(int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5]), sys.argv[6])
    elif command == "kill":
        kill(int(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5]))
    elif command == "check":
        print(json.dumps(check(sys.argv[3])))
