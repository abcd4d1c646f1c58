"""The control plane: start, watch, stop and restart instance processes, and adopt ones already running.

A plain library (no Textual): ``koboldtui start/stop/ps/up`` call it from the main thread,
the panel and the gateway from worker threads, several processes at once. Methods that
wait (``start(wait=True)``, ``stop``) block the calling thread only; ``poll()`` advances
every instance one step and never waits long, so a loop or a timer drives health, stall
detection and restart backoff.

The ``Supervisor`` owns its collaborators and keeps none of their state:

- ``RunBook`` (``run_book``): the one record of each run (pid, token, state, stop mark,
  pending restart, last error, who started it) in SQLite; every transition is one
  ``BEGIN IMMEDIATE`` step, so controllers in other processes see and respect it;
- ``InstanceKinds`` (``kinds``): how a serve, command or remote instance is prepared,
  launched, probed and recognised;
- ``RestartPolicy`` (``restarts``): the backoff and the restarts this controller owns;
- ``Child`` records (``children``): the local handle and watchdog clocks of each process
  this controller watches, and ``HealthWatch`` (``health_watch``): what each look at one
  means (loading, ready, stalled, hung, failed to load);
- ``BackgroundLooks`` (``remote``): remote instances, looked at on threads of their own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from koboldtui.config import new_launch_token
from koboldtui.control import logs as logfiles
from koboldtui.control.backoff import Backoff
from koboldtui.control.children import Child
from koboldtui.control.gpu_plan import GpuPlanner, default_gpu_planner
from koboldtui.control.health_watch import HealthWatch
from koboldtui.control.kinds import InstanceKinds, LaunchTools, RemoteKind, default_environ
from koboldtui.control.launcher import CommandBuilder
from koboldtui.control.probe import Health
from koboldtui.control.process import pid_alive, serve_command, spawn, terminate_group
from koboldtui.control.remote import (
    BackgroundLooks,
    FlavourWatch,
    Look,
    look_age,
    remote_snapshot,
    unlooked_snapshot,
)
from koboldtui.control.restarts import RestartPolicy
from koboldtui.control.run_book import CANCELLED, LAUNCHING, STOPPING, RunBook, owner_alive
from koboldtui.control.run_book import RUNNING as CLAIM_RUNNING
from koboldtui.control.secrets import InstanceSecrets
from koboldtui.control.spec import InstanceSpec
from koboldtui.control.state import (
    RUNNING,
    InstanceSnapshot,
    InstanceState,
    StartError,
    describe_exit,
    with_log_tail,
)
from koboldtui.paths import AppPaths
from koboldtui.stop_budget import supervisor_grace_s
from koboldtui.store.instances import InstanceStore, Launch
from koboldtui.store.runs import RunRecord, RunStore

__all__ = [
    "InstanceSnapshot",
    "InstanceState",
    "LaunchBusyError",
    "StartError",
    "StopReport",
    "Supervisor",
]

# SIGKILL only after the instance's whole drain (stop_budget): HTTP requests, then Horde jobs
HORDE_STOP_GRACE_S = supervisor_grace_s(horde=True)
ORPHAN_KILL_GRACE_S = 3.0  # a child whose launch a stop overtook is stopped at once
LAUNCH_WAIT_S = 60.0  # how long a start waits for another controller's launch of the same instance
STARTED_BY = ("user", "up", "gateway")


class LaunchBusyError(StartError):
    """Another controller kept preparing the instance's launch too long; try again in a moment."""


@dataclass(frozen=True)
class StopReport:
    """What ``stop`` did: the pid it stopped (None when nothing ran) and whether a restart was cancelled."""

    snapshot: InstanceSnapshot
    stopped_pid: int | None
    cancelled_restart: bool


class Supervisor:
    """Starts, watches and stops instances; shares what runs with every other controller through the run record."""

    def __init__(
        self,
        paths: AppPaths,
        store: InstanceStore,
        *,
        gpu_planner: GpuPlanner | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        backoff: Backoff | None = None,
        stall_timeout_s: float = 180.0,
        stop_grace_s: float = supervisor_grace_s(horde=False),
        health_interval_s: float = 10.0,
        hang_timeout_s: float = 90.0,
        health_timeout_s: float = 2.0,
        log_max_bytes: int = logfiles.DEFAULT_MAX_BYTES,
        command_builder: CommandBuilder = serve_command,
        environ: dict[str, str] | None = None,
    ) -> None:
        self.paths = paths.ensure()
        self.store = store
        self.secrets = InstanceSecrets(paths.secrets_file)
        self._clock, self._wall = clock, wall
        self.runs = RunBook(RunStore(store.conn, wall=wall), wall=wall)
        self.runs.adopt_old_files(self.paths.data_dir / "run")
        self.kinds = InstanceKinds(
            LaunchTools(
                self.paths,
                gpu_planner or default_gpu_planner(store),
                command_builder,
                default_environ(environ),
            )
        )
        self.restarts = RestartPolicy(backoff, clock=clock)
        self.flavours = FlavourWatch()  # remote instances' state, any instance's flavour facts
        self.remotes = BackgroundLooks(self.flavours, on_look=self._record_look)
        self._log_max_bytes = log_max_bytes
        self.stop_grace_s = stop_grace_s
        self.health = HealthWatch(
            self.runs,
            clock=clock,
            stall_timeout_s=stall_timeout_s,
            health_interval_s=health_interval_s,
            hang_timeout_s=hang_timeout_s,
            health_timeout_s=health_timeout_s,
        )
        self._children: dict[str, Child] = {}
        self._lock = threading.Lock()  # guards _children; never held while waiting

    @property
    def health_interval_s(self) -> float:
        """How often a ready instance's health is looked at (the hang watchdog's settings)."""
        return self.health.health_interval_s

    @property
    def hang_timeout_s(self) -> float:
        """How long a ready instance may leave its health unanswered before it is killed."""
        return self.health.hang_timeout_s

    # -- reading -------------------------------------------------------------------------

    def spec(self, name: str) -> InstanceSpec:
        """The saved spec of ``name`` (``UnknownInstanceError`` names the known ones)."""
        return InstanceSpec.from_dict(self.store.get(name).spec)

    def snapshot(self, name: str) -> InstanceSnapshot:
        """How ``name`` is doing now, from the shared run record (a remote one: from its last look)."""
        return self._snapshot(self.spec(name), self.runs.get(name))

    def snapshots(self) -> list[InstanceSnapshot]:
        """Every saved instance, sorted by name (one read of the run records)."""
        records = self.runs.all()
        specs = [InstanceSpec.from_dict(row.spec) for row in self.store.all()]
        return [self._snapshot(s, records.get(s.name) or RunRecord(s.name)) for s in specs]

    def _snapshot(self, spec: InstanceSpec, record: RunRecord) -> InstanceSnapshot:
        if self.kinds.of(spec) is self.kinds.remote:
            return self._remote_snapshot(spec, record)
        restart_in = self.restarts.remaining(spec.name)
        if restart_in is None and record.restart_at is not None and owner_alive(record.restart_owner):
            restart_in = max(0.0, record.restart_at - self._wall())
        return InstanceSnapshot.from_record(
            spec,
            record,
            wall_now=self._wall(),
            log_path=record.log_path or str(logfiles.log_path_for(self.paths.log_dir, spec.name)),
            restart_in_s=restart_in,
        )

    def _remote_snapshot(self, spec: InstanceSpec, record: RunRecord) -> InstanceSnapshot:
        """The last look (ours, else the one another controller recorded); asks for a new one in the background."""
        self.remotes.request(spec.name, spec.base_url(), self.secrets.get(spec.name).get("api_key"))
        look = self.remotes.latest(spec.name)
        if look is not None:
            return remote_snapshot(spec, look, age_s=look_age(look, time.monotonic()))
        if record.looked_at is not None:
            try:
                state = InstanceState(record.state)
            except ValueError:
                state = InstanceState.UNREACHABLE
            return unlooked_snapshot(
                spec, state, record.last_error, max(0.0, self._wall() - record.looked_at)
            )
        return unlooked_snapshot(spec, InstanceState.UNREACHABLE, "not looked at yet", None)

    def look_at_remotes(self, wait_s: float = 0.0) -> None:
        """Ask for a look at every remote instance; wait at most ``wait_s`` in all for the answers."""
        names = []
        for row in self.store.all():
            spec = InstanceSpec.from_dict(row.spec)
            if self.kinds.of(spec) is self.kinds.remote:
                self.remotes.request(spec.name, spec.base_url(), self.secrets.get(spec.name).get("api_key"))
                names.append(spec.name)
        if wait_s > 0 and names:
            self.remotes.settle(names, wait_s)

    def _record_look(self, name: str, look: Look) -> None:
        state = InstanceState.UNREACHABLE if look.facts is None else InstanceState.READY
        self.runs.looked(name, state.value, look.reason)

    def managed(self) -> list[str]:
        """Names this controller is watching or will restart."""
        with self._lock:
            names = set(self._children)
        return sorted(names | set(self.restarts.names()))

    def is_running(self, name: str) -> bool:
        """True while a process of ``name`` is starting, loading, ready or stopping (any controller's)."""
        record = self.runs.get(name)
        return record.live and (record.pid is None or pid_alive(record.pid))

    # -- start ---------------------------------------------------------------------------

    def start(
        self,
        name: str,
        *,
        wait: bool = False,
        timeout_s: float | None = None,
        progress: Callable[[InstanceSnapshot], None] | None = None,
        started_by: str = "user",
    ) -> InstanceSnapshot:
        """Start ``name`` (or adopt it if it already runs); with ``wait``, block until ready or failed.

        ``started_by`` ("user", "up", "gateway") is kept in the run record until a stop,
        so each kind of controller stops only what it started (``stop_all(started_by=...)``).
        A start refused before launch (missing program, taken port, bad model) raises
        ``StartError`` and leaves the run failed with that error, like a crash would.
        """
        if started_by not in STARTED_BY:
            raise ValueError(f"started_by must be one of {', '.join(STARTED_BY)}, not {started_by!r}")
        self._launch(self.spec(name), started_by=started_by)
        if wait:
            return self.wait_ready(name, timeout_s=timeout_s, progress=progress)
        return self.snapshot(name)

    def supervise(self, name: str) -> InstanceSnapshot:
        """Start ``name`` for ``up``: a start that fails is retried with backoff when its policy says so."""
        try:
            self._launch(self.spec(name), started_by="up", retry=True)
        except StartError:
            pass  # recorded as failed (with a restart when the policy says so)
        return self.snapshot(name)

    def dismiss(self, name: str) -> InstanceSnapshot:
        """The person read the failure of ``name``: failed → stopped, its error and pending restart dropped."""
        self.spec(name)
        self.restarts.forget(name)
        self.runs.dismiss(name)
        return self.snapshot(name)

    def _launch(
        self, spec: InstanceSpec, *, started_by: str | None, retry: bool = False, restart: bool = False
    ) -> None:
        """Claim the run, prepare, spawn and record the child; adopt or wait when another controller has it."""
        name = spec.name
        kind = self.kinds.of(spec)
        if isinstance(kind, RemoteKind):
            raise kind.refuse(spec, "start")
        token = new_launch_token()  # hex: it may go on a `koboldtui serve` command line
        log_path = logfiles.log_path_for(self.paths.log_dir, name)
        deadline = self._wall() + LAUNCH_WAIT_S
        while True:
            outcome, record = self.runs.claim(
                name,
                token=token,
                port=spec.port,
                log_path=str(log_path),
                started_by=None if restart else started_by,
                restart=restart,
            )
            if outcome == CANCELLED:
                self.restarts.taken(name)
                return
            if outcome == CLAIM_RUNNING:
                launch = Launch(name, record.pid or 0, record.port or spec.port, record.token or "",
                                record.started_at or 0.0, record.log_path or str(log_path))
                if self._adopt(launch, spec):
                    self.restarts.taken(name)
                    return
                if self._wall() >= deadline:
                    raise LaunchBusyError(f"{name!r}: its recorded process could not be checked; try again")
                continue  # it was not ours after all (and is now recorded as gone): claim again
            if outcome in (LAUNCHING, STOPPING):  # another controller is at it: wait, then claim
                if self._wall() >= deadline:
                    doing = "started" if outcome == LAUNCHING else "stopped"
                    raise LaunchBusyError(
                        f"{name!r} is being {doing} by another controller for over "
                        f"{LAUNCH_WAIT_S:.0f} s; try again in a moment"
                    )
                time.sleep(0.02)
                continue
            break
        if self.store.find(name) is None:
            self.store.get(name)  # removed meanwhile: UnknownInstanceError
        if restart:
            self.restarts.taken(name)
        secret = self.secrets.get(name)
        try:
            prepared = kind.prepare(
                spec, token=token, secret=secret, port_owner_hint=self._port_owner_hint(spec.port, name)
            )
            logfiles.rotate_if_large(prepared.log_path, max_bytes=self._log_max_bytes)
            try:
                child = spawn(
                    prepared.command,
                    env=prepared.env,
                    log_path=prepared.log_path,
                    cwd=prepared.cwd or self.paths.data_dir,
                    header=prepared.header,
                )
            except OSError as exc:
                raise StartError(
                    f"cannot start {name!r}: launching {prepared.command[0]} failed: {exc}"
                ) from exc
        except Exception as exc:
            # refused before any process ran: recorded exactly like a failure after launch
            message = str(exc) if isinstance(exc, StartError) else f"cannot start {name!r}: {exc}"
            delay = None
            if (retry or restart) and spec.restart == "on-failure":
                delay = self.restarts.delay_after_exit(name, None)
                message = f"{message}; restarting in {delay:.0f} s"
            self.runs.failed_to_launch(name, token, message, restart_in_s=delay)
            if delay is not None:
                self.restarts.schedule(name, delay)
            if isinstance(exc, StartError):
                raise
            raise StartError(message) from exc
        if not self.runs.launched(name, token, child.pid):
            # a stop took the reservation while we spawned (or the spec was removed): no orphan
            terminate_group(child.pid, popen=child.popen, grace_s=ORPHAN_KILL_GRACE_S)
            if self.store.find(name) is None:
                self.store.get(name)
            return
        with self._lock:
            self._children[name] = Child(
                name=name,
                token=token,
                pid=child.pid,
                host=spec.host,
                port=spec.port,
                log_path=prepared.log_path,
                popen=child.popen,
                api_key=secret.get("api_key"),
                health_path=kind.health_path(spec),
                progress_at=self._clock(),
                kind=kind,
            )

    def _port_owner_hint(self, port: int, name: str) -> str | None:
        for launch in self.store.launches():
            if launch.port == port and launch.name != name and pid_alive(launch.pid):
                return f"instance {launch.name!r} (pid {launch.pid})"
        return None

    def wait_ready(
        self,
        name: str,
        *,
        timeout_s: float | None = None,
        progress: Callable[[InstanceSnapshot], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> InstanceSnapshot:
        """Block until ``name`` is ready; raise ``StartError`` with the reason if it fails or times out."""
        deadline = None if timeout_s is None else self._clock() + timeout_s
        last_state = None
        while True:
            snap = self.poll([name])[0]
            if progress is not None and snap.state != last_state:
                progress(snap)
            last_state = snap.state
            if snap.state is InstanceState.READY:
                return snap
            if snap.state not in RUNNING:
                raise StartError(
                    f"{name!r} did not become ready: {snap.last_error or snap.state.value}"
                )
            if deadline is not None and self._clock() >= deadline:
                self.stop(name)
                raise StartError(f"{name!r} was not ready after {timeout_s:.0f} s; it was stopped")
            sleep(0.1)

    # -- reattach ------------------------------------------------------------------------

    def reattach(self) -> list[str]:
        """Adopt every recorded launch that is verifiably still its instance; record the others as gone."""
        adopted = []
        for launch in self.store.launches():
            try:
                spec = self.spec(launch.name)
            except KeyError:
                continue
            if self._adopt(launch, spec):
                adopted.append(launch.name)
        return adopted

    def _adopt(self, launch: Launch, spec: InstanceSpec) -> bool:
        """Watch ``launch`` when it is still this instance (token confirmed); else record that it ended."""
        with self._lock:
            current = self._children.get(launch.name)
            if current is not None and current.token == launch.token:
                return True
        kind = self.kinds.of(spec)
        if isinstance(kind, RemoteKind):
            return False
        api_key = self.secrets.get(spec.name).get("api_key")
        check = kind.check(launch, spec, api_key)
        if not check.ours:
            if not launch.token:  # a row an older version left without a token: just stale
                self.store.clear_launch(launch.name)
                return False
            tail = logfiles.tail_of_last_launch(launch.log_path, 10)
            message = f"stopped unexpectedly while no controller watched it ({check.reason})"
            old = self.runs.get(launch.name)
            restart_owner = old.owner if owner_alive(old.owner) and spec.restart == "on-failure" else None
            self.runs.ended(
                launch.name,
                launch.token,
                error=with_log_tail(message, tail),
                restart_in_s=self.restarts.backoff.delay(1) if restart_owner else None,
                restart_owner=restart_owner,
            )
            return False
        state = {Health.READY: InstanceState.READY, Health.LOADING: InstanceState.LOADING}.get(check.health)
        if state is not None:
            self.runs.became(launch.name, launch.token, state.value)
        now = self._clock()
        with self._lock:
            self._children[launch.name] = Child(
                name=launch.name,
                token=launch.token,
                pid=launch.pid,
                host=spec.host,
                port=launch.port,
                log_path=Path(launch.log_path),
                popen=None,
                api_key=api_key,
                health_path=kind.health_path(spec),
                progress_at=now,
                kind=kind,
                ready_at=now if state is InstanceState.READY else None,
            )
        return True

    def _adopt_foreign(self, records: dict[str, RunRecord]) -> None:
        """Pick up instances another controller started (e.g. ``koboldtui start`` in another shell).

        A recorded process that is gone with nobody to see it end (its controller exited)
        is recorded as failed here, so the panel never shows a dead instance as running.
        """
        for name, record in records.items():
            if record.pid is None or not record.token or not record.live:
                continue
            with self._lock:
                child = self._children.get(name)
                known = child is not None and child.token == record.token
            if not known:  # alive: adopted; gone (nobody saw it end): recorded as failed
                try:
                    spec = self.spec(name)
                except KeyError:
                    continue
                launch = Launch(name, record.pid, record.port or spec.port, record.token,
                                record.started_at or 0.0, record.log_path or "")
                self._adopt(launch, spec)

    # -- stop ----------------------------------------------------------------------------

    def stop(self, name: str, *, grace_s: float | None = None) -> InstanceSnapshot:
        """Stop ``name`` (SIGTERM, wait, SIGKILL the group); also cancels a pending restart."""
        return self.stop_report(name, grace_s=grace_s).snapshot

    def stop_report(self, name: str, *, grace_s: float | None = None) -> StopReport:
        """``stop``, saying what it did: the pid stopped, or a crash-restart it cancelled.

        The stop is one atomic step on the run record (stopping, no restart), taken before
        any signal: an exit that races it is recorded as stopped, a restart anywhere is
        refused, and a launch another controller is preparing loses its reservation.
        """
        spec = self.spec(name)
        kind = self.kinds.of(spec)
        if isinstance(kind, RemoteKind):
            raise kind.refuse(spec, "stop")
        if grace_s is None:  # a Horde worker finishes its jobs first (stop_budget)
            grace_s = (
                max(self.stop_grace_s, HORDE_STOP_GRACE_S) if spec.horde.enabled else self.stop_grace_s
            )
        self.restarts.forget(name)
        old = self.runs.begin_stop(name)
        cancelled = (
            old.state == InstanceState.FAILED.value
            and old.restart_at is not None
            and owner_alive(old.restart_owner)
        )
        with self._lock:
            child = self._children.get(name)
            if child is not None and child.token != old.token:
                child = None
        if old.pid is None or not old.live:
            with self._lock:
                self._children.pop(name, None)
            return StopReport(self.snapshot(name), None, cancelled)
        terminate_group(
            old.pid,
            popen=None if child is None else child.popen,
            grace_s=grace_s,
            token=None if child is not None and child.popen is not None else (old.token or None),
        )
        self.runs.end_stop(name, old.token)
        with self._lock:
            if self._children.get(name) is child:
                self._children.pop(name, None)
        return StopReport(self.snapshot(name), old.pid, False)

    def stop_all(
        self, *, grace_s: float | None = None, started_by: str | None = None
    ) -> list[InstanceSnapshot]:
        """Stop, in parallel, every instance this controller runs, adopted or will restart (quitting the panel).

        With ``started_by`` ("up", "gateway"): only the instances this controller itself
        started with that word and that still carry it (a stop by anyone clears it), so
        ``up`` leaves the instances it merely adopted running.
        """
        names = self.managed()
        if started_by is not None:
            records = self.runs.all()
            names = [
                n for n in names
                if (r := records.get(n)) is not None
                and r.started_by == started_by
                and r.owner == self.runs.owner
            ]
        if not names:
            return []
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            return list(pool.map(lambda n: self.stop(n, grace_s=grace_s), names))

    # -- the state machine ---------------------------------------------------------------

    def poll(self, names: Sequence[str] | None = None) -> list[InstanceSnapshot]:
        """Advance each instance one step: exits, health, stalls, due restarts. Returns snapshots."""
        records = self.runs.all()
        if names is None:
            self._adopt_foreign(records)
        with self._lock:
            children = [c for n, c in self._children.items() if names is None or n in names]
        for child in children:
            self._step(child, records.get(child.name) or RunRecord(child.name))
        self._restart_due(names, self.runs.all() if children else records)
        if names is None:
            self.look_at_remotes()
            return self.snapshots()
        return [self.snapshot(n) for n in names]

    def _forget_child(self, child: Child) -> None:
        with self._lock:
            if self._children.get(child.name) is child:
                del self._children[child.name]

    def _step(self, child: Child, record: RunRecord) -> None:
        if record.token != child.token:
            self._forget_child(child)  # stopped or replaced by another controller
            if child.popen is not None:
                child.popen.poll()  # reap it
            return
        if record.state == InstanceState.STOPPING.value:
            return  # the stopper finishes it
        code = child.exit_code_now()
        if code is not False:
            self._ended(child, code)
            return
        reason = self.health.step(child, record)
        if reason is not None:
            terminate_group(child.pid, popen=child.popen, grace_s=5.0, token=child.token or None)
            self._ended(child, None, reason=reason)

    def _ended(self, child: Child, code: int | None, *, reason: str | None = None) -> None:
        """Record that the process of ``child`` is gone: stopped when asked for (or exit 0), else failed."""
        name = child.name
        self._forget_child(child)
        try:
            spec = self.spec(name)
        except KeyError:
            return
        error: str | None = None
        delay = None
        if reason is not None or code != 0:
            message = reason if reason is not None else describe_exit(code)
            if spec.restart == "on-failure":
                ready_for = None if child.ready_at is None else self._clock() - child.ready_at
                delay = self.restarts.delay_after_exit(name, ready_for)
                message = f"{message}; restarting in {delay:.0f} s"
            error = with_log_tail(message, logfiles.tail_of_last_launch(child.log_path, 15))
        old, new = self.runs.ended(name, child.token, error=error, restart_in_s=delay)
        if new.state == InstanceState.FAILED.value and new.restart_owner == self.runs.owner and delay is not None:
            self.restarts.schedule(name, delay)

    def _restart_due(self, names: Sequence[str] | None, records: dict[str, RunRecord]) -> None:
        """Restart the failed instances whose restart this controller owns and whose backoff ended."""
        for name, record in records.items():
            if names is not None and name not in names:
                continue
            mine = (
                record.state == InstanceState.FAILED.value
                and record.restart_at is not None
                and record.restart_owner == self.runs.owner
            )
            if not mine:
                if self.restarts.scheduled(name) and record.state != InstanceState.FAILED.value:
                    self.restarts.taken(name)  # stopped, dismissed or started by someone else
                continue
            if not self.restarts.scheduled(name):  # recorded by another controller for us
                self.restarts.schedule(name, record.restart_at - self._wall())
            if not self.restarts.due(name):
                continue
            try:
                spec = self.spec(name)
                self._launch(spec, started_by=None, restart=True)
            except KeyError:
                self.restarts.forget(name)
            except StartError:
                pass  # recorded as failed again, with the next restart when the policy says so

