"""``LiveBackend``: the panel's door wired to the real supervisor, NVML sampler, store and instances.

Thin on purpose: each method forwards to the module that owns the job and turns its
errors into ``BackendError`` sentences. Everything here blocks, so the app calls it
only from thread workers.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from koboldtui.config import ServeConfig
from koboldtui.models.bundled import BUNDLED_MODEL_ALIAS as BUNDLED
from koboldtui.paths import AppPaths, app_paths
from koboldtui.status import InstanceStatus
from koboldtui.tui.backend import (
    BackendError,
    CatalogModel,
    FitEstimate,
    GatewayReport,
    GpuReport,
    GpuView,
    InstanceDraft,
    InstanceView,
    ProgressCallback,
)
from koboldtui.tui.instance_api import InstanceApi
from koboldtui.tui.panel_words import panel_words

MIB = 1024 * 1024


def _errors() -> tuple[type[BaseException], ...]:
    """The control-plane errors whose message is already written for a person."""
    from koboldtui.control.secrets import SecretsError
    from koboldtui.control.spec import SpecError
    from koboldtui.control.state import StartError
    from koboldtui.store.instances import InstanceStoreError

    return (StartError, SpecError, InstanceStoreError, SecretsError, ValueError, OSError)


class LiveBackend(InstanceApi):
    """PanelBackend over koboldtui.control / gpu / store / models and each instance's HTTP API."""

    def __init__(self, paths: AppPaths | None = None, gpu_interval_s: float = 1.0,
                 http_timeout_s: float = 2.0) -> None:
        from koboldtui.control.registry import InstanceRegistry
        from koboldtui.control.supervisor import Supervisor
        from koboldtui.gpu.sampler import GpuSampler
        from koboldtui.store.db import open_database
        from koboldtui.store.instances import InstanceStore
        from koboldtui.system.machine import MachineSampler
        from koboldtui.system.processes import ProcessSampler

        self.paths = (paths or app_paths()).ensure()
        self.conn = open_database(self.paths.database)
        self.store = InstanceStore(self.conn)
        self.registry = InstanceRegistry(self.store, self.paths)
        self.supervisor = Supervisor(self.paths, self.store)
        self.http_timeout_s = http_timeout_s
        self._db_lock = threading.RLock()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="koboldtui-status")
        self._started_autostart = False
        self._meta_cache: dict[str, Any] = {}
        self._pids: set[int] = set()
        self.sampler = GpuSampler(interval_s=gpu_interval_s, our_pids=lambda: tuple(self._pids))
        self._reconciled = False
        self.machine = MachineSampler()  # CPU/RAM/load, read in each gpu_report poll
        self.processes = ProcessSampler()  # RSS and CPU % per instance, read in each instances poll
        self.supervisor.reattach()
        self.sampler.start()

    # helpers ---------------------------------------------------------------------------
    def _guard(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except BackendError:
            raise
        except _errors() as exc:
            raise BackendError(panel_words(f"{what}: {exc}")) from exc

    def _inventory(self):
        inventory = self.sampler.latest() or self.sampler.sample_now()
        if not self._reconciled and inventory.available:
            from koboldtui.store.gpus import reconcile

            with self._db_lock:
                reconcile(self.conn, [(g.uuid, g.name) for g in inventory.gpus])
            self._reconciled = True
        return inventory

    def _rows(self):
        from koboldtui.store.gpus import list_gpus

        with self._db_lock:
            return list_gpus(self.conn)

    def _auto_devices(self, inventory=None) -> str:
        from koboldtui.gpu.priority import plan_gpus

        inventory = inventory or self._inventory()
        try:
            return plan_gpus("auto", self._rows(), inventory).visible_devices
        except ValueError:
            return ""

    # reads -----------------------------------------------------------------------------
    def instances(self) -> list[InstanceView]:
        if not self._started_autostart:
            self._started_autostart = True
            for spec in self.registry.list():
                if spec.autostart and not self.supervisor.is_running(spec.name):
                    try:
                        self.supervisor.start(spec.name)
                    except _errors():
                        pass  # shown as failed in the next snapshot
        snaps = self.supervisor.poll()
        with self._db_lock:
            specs = {spec.name: spec for spec in self.registry.list()}
        self._pids = {s.pid for s in snaps if s.pid}
        statuses = list(self._pool.map(self._status_of, snaps))
        facts = list(self._pool.map(self._facts_of, snaps))
        vram = self._vram(snaps)
        usage = self.processes.sample({s.name: s.pid for s in snaps if s.pid and s.kind != "remote"})
        return [
            InstanceView(
                name=s.name, state=s.state.value, port=s.port, model=s.model, gpus=self._gpus_shown(s.gpus),
                pid=s.pid, restarts=s.restarts, uptime_s=s.uptime_s,
                last_error=panel_words(s.last_error) if s.last_error else None, status=st,
                kind=s.kind, facts=f, vram_mib=vram.get(s.name),
                rss_bytes=u.rss_bytes if u else None, cpu_pct=u.cpu_pct if u else None,
                url=specs[s.name].base_url() if s.name in specs else "",
                command=specs[s.name].command if s.name in specs else "",
            )
            for s, st, f, u in zip(snaps, statuses, facts, [usage.get(s.name) for s in snaps])
        ]

    def _vram(self, snaps) -> dict[str, float | None]:
        """MiB per instance from the sampler's latest NVML look, by pid and process group."""
        from koboldtui.gpu.usage import vram_by_instance

        inventory = self.sampler.latest()
        pids = {s.name: s.pid for s in snaps if s.pid}
        if inventory is None or not inventory.available or not pids:
            return {}
        usage = vram_by_instance(inventory, pids)
        return {name: None if used is None else used / MIB for name, used in usage.items()}

    def _facts_of(self, snap) -> Any:
        """What a command or remote server says it is (koboldtui's own: its status is richer)."""
        from koboldtui.control.remote import facts_for

        if snap.kind == "serve":
            return None
        try:
            spec = self.registry.get(snap.name)
            api_key = self.registry.secrets.get(snap.name).get("api_key")
            return facts_for(self.supervisor.flavours, spec, snap, api_key)
        except Exception:  # noqa: BLE001 - shown as "-", never raised into the UI
            return None

    def _gpus_shown(self, gpus: str | None) -> str:
        """'auto' resolved to what it means here: 'CPU' on a machine without a usable GPU."""
        if gpus in (None, "", "auto"):
            inventory = self.sampler.latest()
            if inventory is not None and (not inventory.available or not inventory.gpus):
                return "CPU"
            return "auto"
        return "CPU" if gpus == "cpu" else gpus

    def _status_of(self, snap) -> InstanceStatus | None:
        from koboldtui.control.probe import fetch_status

        if snap.state.value not in ("loading", "ready"):
            return None
        try:
            url, headers = self._base_url(snap.name)
            api_key = headers.get("Authorization", "")[7:] or None
            data = fetch_status(url, api_key=api_key, timeout_s=self.http_timeout_s)
            return InstanceStatus.from_dict(data) if data else None
        except Exception:  # noqa: BLE001 - shown to the person, never raised into the UI
            return None

    def gpu_report(self) -> GpuReport:
        inventory = self._inventory()
        machine = self.machine.sample()
        if not inventory.available or not inventory.gpus:
            reason = inventory.reason or "NVML found no NVIDIA GPU"
            return GpuReport((), reason, "", inventory.driver or "", machine)
        rows = {r.uuid: r for r in self._rows()}
        ordered = sorted(inventory.gpus, key=lambda g: (rows[g.uuid].priority if g.uuid in rows else 999, g.index))
        views = []
        for g in ordered:
            history = self.sampler.history(g.uuid)
            total = g.memory_total or 0
            views.append(GpuView(
                uuid=g.uuid, index=g.index, name=g.name or "GPU",
                mem_used_mib=(g.memory_used or 0) / MIB, mem_total_mib=total / MIB,
                util_pct=g.utilization_gpu, temp_c=g.temperature_c, power_w=g.power_draw_w,
                power_limit_w=g.power_limit_w,
                ours_mib=sum(p.used_memory or 0 for p in g.processes if p.is_ours) / MIB,
                enabled=rows[g.uuid].enabled if g.uuid in rows else True,
                vram_history=tuple(100.0 * (s.memory_used or 0) / total for s in history) if total else (),
                util_history=tuple(float(s.utilization_gpu or 0) for s in history),
            ))
        return GpuReport(tuple(views), None, self._auto_devices(inventory), inventory.driver or "", machine)

    def set_gpu_order(self, uuids: Sequence[str]) -> str:
        from koboldtui.store.gpus import set_order

        self._inventory()
        with self._db_lock:
            self._guard("saving the GPU order", lambda: set_order(self.conn, list(uuids)))
        return self._auto_devices()

    def set_gpu_enabled(self, uuid: str, enabled: bool) -> str:
        from koboldtui.store.gpus import set_enabled

        self._inventory()
        with self._db_lock:
            try:
                set_enabled(self.conn, uuid, enabled)
            except LookupError as exc:
                raise BackendError(f"GPU {uuid} is not known: {exc}") from exc
        return self._auto_devices()

    def catalog(self) -> list[CatalogModel]:
        from koboldtui.models.catalog import list_models

        with self._db_lock:
            entries = list_models(self.conn, self.paths)
        counts: dict[str, int] = {}
        for e in entries:
            counts[e.name] = counts.get(e.name, 0) + 1
        return [
            CatalogModel(
                # two files with one name are told apart by their folder
                name=e.name if counts[e.name] == 1 or e.path is None else f"{e.name} ({e.path.parent.name}/)",
                path=BUNDLED if e.source == "bundled" else str(e.path), size_bytes=e.size or 0,
                n_layers=e.layers, ctx_train=e.context_length, quant=e.quantization or "", error=e.error,
            )
            for e in entries
        ]

    def _model_path(self, model: str | None) -> Path:
        from koboldtui.models.bundled import resolve_model_path

        return resolve_model_path(None if model in (None, BUNDLED) else model, self.paths)

    def fit_estimate(self, model: str | None, gpu_layers: int, ctx: int, parallel: int,
                     gpu_uuids: Sequence[str]) -> FitEstimate:
        from koboldtui.gpu.fit import check_fit
        from koboldtui.gpu.priority import PlannedGpu
        from koboldtui.models.metadata import read_metadata

        try:
            path = str(self._model_path(model))
            meta = self._meta_cache.get(path) or read_metadata(path)
        except Exception as exc:  # noqa: BLE001 - shown to the person, never raised into the UI
            return FitEstimate(False, 0, 0, f"cannot read the model to estimate VRAM: {exc}")
        self._meta_cache[path] = meta
        inventory = self._inventory()
        if not any(inventory.by_uuid(u) for u in gpu_uuids):  # CPU mode, or no GPU ticked: RAM decides
            return self._cpu_fit(meta, bool(gpu_uuids))
        planned = []
        for uuid in gpu_uuids:
            g = inventory.by_uuid(uuid)
            planned.append(PlannedGpu(uuid, g.index if g else None, g.name if g else None,
                                      g.memory_free if g else None))
        check = check_fit(meta, planned, gpu_layers, ctx, parallel)
        need = check.estimate.total / MIB if check.estimate else 0.0
        free = sum(f or 0 for f in check.free) / MIB
        return FitEstimate(check.fits, need, free, panel_words(check.message))

    def _cpu_fit(self, meta: Any, gpus_ticked: bool) -> FitEstimate:
        """The fit on the CPU, in panel words: no VRAM, the weights against the RAM (never '--cpu' or
        'pick another GPU' on a machine without one)."""
        from koboldtui.models.model_check import ram_problem

        ram = self._ram_bytes()
        need = meta.total_tensor_bytes
        where = ("the GPUs ticked are not on this machine now, so it runs on the CPU" if gpus_ticked
                 else "runs on the CPU")
        problem = ram_problem(meta, ram)
        if problem:
            return FitEstimate(False, 0, 0, f"{where}: {problem}")
        ram_words = f" of {ram / 2**30:.1f} GiB RAM" if ram else ""
        return FitEstimate(True, 0, 0, f"{where}: no VRAM needed; weights {need / 2**30:.1f} GiB{ram_words}")

    def port_problem(self, port: int, instance: str | None) -> str | None:
        from koboldtui.control.ports import PortUnavailableError, check_port_available

        if not 1 <= port <= 65535:
            return f"port {port} is out of range: pick one in 1-65535"
        with self._db_lock:
            owner = self.store.port_owner(port, exclude=instance)
        if owner is not None:
            return f"port {port} is already used by instance {owner!r}: pick another port"
        if instance is not None and self.supervisor.is_running(instance) and self.registry.get(instance).port == port:
            return None  # its own running process holds it
        try:
            check_port_available("127.0.0.1", port)
        except PortUnavailableError as exc:
            return panel_words(str(exc))
        return None

    def _free_port(self, start: int = 5001) -> int:
        port = start
        while self.port_problem(port, None) is not None and port < 65535:
            port += 1
        return port

    def default_draft(self) -> InstanceDraft:
        with self._db_lock:
            names = set(self.store.names())
        name = "default"
        n = 2
        while name in names:
            name, n = f"instance-{n}", n + 1
        devices = tuple(d for d in self._auto_devices().split(",") if d)
        config = ServeConfig(name=name, port=self._free_port(), gpu_layers=-1 if devices else 0)
        return InstanceDraft(config, devices)

    def draft_for(self, name: str) -> InstanceDraft:
        spec = self._guard(f"reading {name}", lambda: self.registry.get(name))
        secrets = self.registry.secrets.get(name)
        config = spec.to_serve_config(api_key=secrets.get("api_key"), horde_key=secrets.get("horde_key"))
        config = replace(config, model=None if spec.model == BUNDLED else spec.model, gpu_layers=spec.gpu_layers)
        if spec.gpus == "cpu":
            uuids: tuple[str, ...] = ()
        elif spec.gpus == "auto":
            uuids = tuple(d for d in self._auto_devices().split(",") if d)
        else:
            inventory = self._inventory()
            uuids = tuple(
                (inventory.by_index(int(ref)).uuid if ref.isdigit() and inventory.by_index(int(ref)) else ref)
                for ref in spec.gpus
            )
        return InstanceDraft(config, uuids, spec.restart == "on-failure", autostart=spec.autostart,
                             stored_gpus=spec.gpus if isinstance(spec.gpus, str) else tuple(spec.gpus),
                             stored_gpu_uuids=uuids, kind=spec.kind, command=spec.command,
                             health=spec.health, url=spec.url)

    # changes ---------------------------------------------------------------------------
    def _gpus_field(self, draft: InstanceDraft) -> Any:
        """The spec's GPU selection: unchanged when the form left it alone (never cpu → auto)."""
        uuids = draft.gpu_uuids
        if draft.stored_gpus is not None and uuids == draft.stored_gpu_uuids:
            stored = draft.stored_gpus
            return stored if isinstance(stored, str) else list(stored)
        if not uuids:
            return "cpu"
        auto = tuple(d for d in self._auto_devices().split(",") if d)
        return "auto" if uuids == auto else list(uuids)

    def save_instance(self, draft: InstanceDraft, original_name: str | None) -> None:
        from koboldtui.control.registry import UNSET
        from koboldtui.control.spec import InstanceSpec

        c = draft.config
        fields: dict[str, Any] = {
            "port": c.port, "model": c.model or BUNDLED, "host": c.host,
            "gpus": self._gpus_field(draft), "gpu_layers": c.gpu_layers, "ctx": c.ctx,
            "batch_size": c.batch_size, "parallel": c.parallel, "threads": c.threads,
            "max_queue": c.max_queue, "horde": replace(c.horde, api_key=""),
            "restart": "on-failure" if draft.auto_restart else "no",
            "kind": draft.kind, "command": draft.command, "health": draft.health, "url": draft.url,
            "autostart": draft.autostart,
        }
        if draft.kind == "command":  # relative paths in the command: from where the panel runs
            kept = self.registry.get(original_name).workdir if original_name else ""
            fields["workdir"] = kept or os.getcwd()
        if draft.kind == "remote":  # its port is the URL's; it is watched, never started here
            fields.update(port=self._remote_port(draft.url, c.port), autostart=False)
        horde_key = c.horde.api_key or None
        if original_name is None:
            spec = InstanceSpec(name=c.name, **fields)
            self._guard(f"creating {c.name}", lambda: self.registry.add(spec, horde_key=horde_key, api_key=c.api_key))
        else:
            self._guard(f"saving {original_name}", lambda: self.registry.edit(
                original_name, fields, horde_key=horde_key if horde_key else UNSET,
                api_key=c.api_key if c.api_key else UNSET))

    @staticmethod
    def _remote_port(url: str, fallback: int) -> int:
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(url)
            return parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return fallback  # the spec's own check words the bad URL

    def _set_autostart(self, name: str, on: bool) -> None:
        """Remember the person's last word: started instances come back with the next panel,
        stopped ones stay stopped."""
        with self._db_lock:
            spec = self.registry.get(name)
            if spec.kind != "remote" and spec.autostart != on:  # a remote is watched, never started
                self.registry.edit(name, {"autostart": on})

    def start_instance(self, name: str) -> None:
        self._guard(f"starting {name}", lambda: self._set_autostart(name, True))
        self._start(name)

    def stop_instance(self, name: str) -> None:
        self._stop(name)
        self._guard(f"stopping {name}", lambda: self._set_autostart(name, False))

    def _start(self, name: str) -> None:
        self._guard(f"starting {name}", lambda: self.supervisor.start(name))

    def _stop(self, name: str) -> None:
        self._guard(f"stopping {name}", lambda: self.supervisor.stop(name))

    def restart_instance(self, name: str) -> None:
        self._stop(name)
        self._start(name)

    def _ram_bytes(self) -> int | None:
        try:
            return self.machine.sample().mem_total_bytes or None
        except Exception:  # noqa: BLE001 - unknown RAM: the RAM check is skipped, never the switch
            return None

    def check_model(self, name: str, model: str) -> str | None:
        from koboldtui.control.model_switch import switch_problem

        return self._guard(f"checking {Path(model).name}", lambda: switch_problem(
            self.supervisor, name, model, ram_bytes=self._ram_bytes()))

    def switch_model(self, name: str, model: str, progress: ProgressCallback) -> None:
        """Checked before the instance stops; a model that fails to load is rolled back (control/model_switch)."""
        from koboldtui.control.model_switch import switch_model

        self._guard(f"switching {name}", lambda: switch_model(
            self.supervisor, self.registry, name, model, progress, ram_bytes=self._ram_bytes()))

    def dismiss_failure(self, name: str) -> None:
        self._guard(f"dismissing the failure of {name}", lambda: self.supervisor.dismiss(name))

    def set_batch_size(self, name: str, batch_size: int) -> None:
        running = self.supervisor.is_running(name)
        self._guard(f"saving the batch size of {name}", lambda: self.registry.edit(name, {"batch_size": batch_size}))
        if running:
            self.restart_instance(name)

    def log_tail(self, instance: str, lines: int = 200) -> list[str]:
        from koboldtui.control.logs import log_path_for, tail_lines

        path = log_path_for(self.paths.log_dir, instance)
        if not path.exists():
            return [f"no log yet at {path}: start the instance with s"]
        return tail_lines(path, lines)

    # the gateway ---------------------------------------------------------------------------
    def gateway_report(self) -> GatewayReport:
        import httpx

        from koboldtui.tui.gateway_probe import read_gateway

        if getattr(self, "_gateway_client", None) is None:
            self._gateway_client = httpx.Client(trust_env=False)
        return read_gateway(self.conn, self.paths.secrets_file, self._gateway_client, db_lock=self._db_lock)

    def use_model(self, name: str) -> None:
        from koboldtui.gateway.current_model import UnknownModelName, use_model

        with self._db_lock:
            try:
                use_model(self.conn, self.paths.secrets_file, name)
            except UnknownModelName as exc:
                raise BackendError(str(exc)) from exc

    def get_setting(self, key: str, default: str | None = None) -> str | None:
        from koboldtui.store.settings import get_setting

        with self._db_lock:
            value = get_setting(self.conn, key, default)
        return value if value is None else str(value)

    def set_setting(self, key: str, value: str) -> None:
        from koboldtui.store.settings import set_setting

        with self._db_lock:
            set_setting(self.conn, key, value)

    def close(self, stop_instances: bool) -> None:
        try:
            if stop_instances:
                self.supervisor.stop_all()
        finally:
            self.sampler.stop(timeout=2)
            self._pool.shutdown(wait=False)
            if getattr(self, "_gateway_client", None) is not None:
                self._gateway_client.close()
            self.conn.close()
