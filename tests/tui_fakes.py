"""A deterministic stand-in for what this machine lacks (GPUs, a busy Horde) for panel tests.

Only the edge is faked: the panel code under test is real. Screenshots use it too, so
the pictures in the README are reproducible byte for byte.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace

from koboldtui.config import HordeSettings, ServeConfig
from koboldtui.engine.types import EngineSnapshot, EngineTotals, Origin, QueueEntry, RequestState
from koboldtui.status import InstanceInfo, InstanceStatus
from koboldtui.system.machine import MachineReport
from koboldtui.tui.backend import (
    BackendError,
    CatalogModel,
    FitEstimate,
    GatewayReport,
    GpuReport,
    GpuView,
    InstanceDraft,
    InstanceView,
)


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _wave(n: int, base: float, amp: float, phase: int = 0) -> tuple[float, ...]:
    pattern = (0, 1, 3, 5, 6, 5, 3, 1, 0, 2, 4, 6, 7, 6, 4, 2)
    return tuple(base + amp * pattern[(i + phase) % len(pattern)] / 7 for i in range(n))


def fake_gpus() -> list[GpuView]:
    return [
        GpuView(
            uuid="GPU-1f6e1c7a-4b5e-4c1d-9a55-000000000000", index=0, name="NVIDIA GeForce RTX 4090",
            mem_used_mib=14540, mem_total_mib=24564, util_pct=87, temp_c=66, power_w=312, power_limit_w=450,
            ours_mib=12288, vram_history=_wave(40, 40, 20), util_history=_wave(40, 30, 65, 3),
        ),
        GpuView(
            uuid="GPU-9c2d4e11-77aa-4f0b-8e21-111111111111", index=1, name="NVIDIA RTX A4000",
            mem_used_mib=3100, mem_total_mib=16376, util_pct=4, temp_c=41, power_w=36, power_limit_w=140,
            ours_mib=0, vram_history=_wave(40, 15, 5, 7), util_history=_wave(40, 0, 10, 9),
        ),
    ]


def fake_machine() -> MachineReport:
    """A 16-thread box a third busy, with a minute of history."""
    return MachineReport(
        cpu_pct=34.5, cpu_count=16, mem_used_bytes=21_474_836_480, mem_total_bytes=68_719_476_736,
        load=(5.42, 4.87, 3.9), cpu_history=_wave(60, 10, 40, 2), mem_history=_wave(60, 28, 6, 5),
        load_history=_wave(60, 3.5, 2.5, 11),
    )


def fake_status(name: str, port: int, horde: dict, queue: tuple[QueueEntry, ...], n_batch: int = 512,
                model: str = "gemma-3-270m-it-Q4_K_M", parallel: int = 4) -> InstanceStatus:
    busy = sum(1 for q in queue if q.state in (RequestState.PROMPT, RequestState.GENERATING))
    return InstanceStatus(
        instance=InstanceInfo(
            name=name, version="0.1.0", pid=4242, host="127.0.0.1", port=port, launch_token="t",
            started_at=0.0, uptime_s=3723.0, state="ready", threads=8, gpu_layers=99,
            cuda_visible_devices="GPU-1f6e1c7a-4b5e-4c1d-9a55-000000000000",
        ),
        engine=EngineSnapshot(
            model_name=model, model_path=f"/models/{model}.gguf", n_ctx=8192, n_ctx_per_seq=8192 // parallel,
            n_batch=n_batch, n_ubatch=min(n_batch, 1024), parallel=parallel, slots_busy=busy,
            queue_depth=sum(1 for q in queue if q.state == RequestState.QUEUED), queue=queue,
            totals=EngineTotals(requests=57, completed=51, generated_tokens=12345, last_tokens_per_s=41.5,
                                prompt_tokens=40960, prompt_tokens_cached=15360),
        ),
        horde=horde,
    )


def busy_horde(remaining_s: float = 14.2) -> dict:
    return {
        "state": "paused_local", "window_s": 20.0, "remaining_s": remaining_s, "jobs_done": 128,
        "jobs_faulted": 2, "jobs_dropped": 1, "kudos_session": 1840.5, "kudos_total": 52311,
        "username": "kobold_fan#4242", "worker_name": "kobold-box", "worker_id": "w-1", "tokens_per_s": 38.7,
        "skipped": {"max_context_length": 3, "models": 1},
        "last_error": "submit timed out after 30 s; the job was resent",
        "pops": 412, "empty_pops": 251, "models": ["koboldcpp/gemma-3-270m-it"],
        "recent_jobs": [
            {"tokens": 180, "tokens_per_s": 39.2, "state": "ok", "kudos": 14.5},  # an older worker: no times
            {"tokens": 240, "tokens_per_s": 37.1, "state": "ok", "kudos": 19.0, "model": "koboldcpp/gemma-3-270m-it",
             "held_s": 7.4, "ttl_s": 150.0},
            {"tokens": 0, "tokens_per_s": 0.0, "state": "faulted", "kudos": 0.0, "model": "koboldcpp/gemma-3-270m-it",
             "held_s": 0.3, "ttl_s": 150.0},
            {"tokens": 96, "tokens_per_s": 41.0, "state": "ok", "kudos": 7.8, "model": "koboldcpp/gemma-3-270m-it",
             "held_s": 3.1, "ttl_s": 150.0},
        ],
    }


def fake_queue() -> tuple[QueueEntry, ...]:
    return (
        QueueEntry("KTUIa1b2c3d4e5f6", Origin.LOCAL, RequestState.GENERATING, 312, 88, 41.2, 2.1),
        QueueEntry("KTUIhorde0000001", Origin.HORDE, RequestState.GENERATING, 1650, 201, 37.9, 6.4),
        QueueEntry("KTUIhorde0000002", Origin.HORDE, RequestState.PROMPT, 2048, 0, 0.0, 0.3),
        QueueEntry("KTUIq00000000003", Origin.LOCAL, RequestState.QUEUED, 95, 0, 0.0, 0.1),
    )


class FakeBackend:
    """Deterministic PanelBackend: two GPUs (or none), two instances, a busy Horde."""

    def __init__(self, gpus: bool = True, instances: bool = True, gpu_delay: threading.Event | None = None) -> None:
        self.calls: list[tuple] = []
        self.gpus = fake_gpus() if gpus else []
        self.gpu_block = gpu_delay  # when set, gpu_report waits for it (a slow NVML)
        self.settings: dict[str, str] = {}
        self.taken_ports = {5001, 5002, 8080}
        self.horde_remaining = 14.2
        self.queue = fake_queue()
        self.log = [f"line {i}: llama_model_loader ok" for i in range(30)]
        self.stream_tokens = ["Once", " upon", " a", " time", "."]
        self.concurrent = 0
        self.max_concurrent = 0
        self._lock = threading.Lock()
        self.drafts: dict[str, InstanceDraft] = {}
        self.states: dict[str, str] = {}
        self.facts: dict[str, object] = {}  # what a command/remote server says (FlavourFacts)
        self.errors: dict[str, str] = {}  # last_error per instance (e.g. an unreachable remote)
        self.vram: dict[str, float] = {}  # MiB per instance, as NVML-by-pid would say
        self.model_problems: dict[str, str] = {}  # model path -> why check_model refuses it
        self.machine: MachineReport | None = fake_machine()  # CPU, RAM, load as psutil would say
        self.horde_state = "paused_local"
        # the gateway: None = not enabled and not answering; a dict = its /api/koboldtui/gateway JSON
        self.gateway_status: dict | None = None
        self.gateway_enabled = False
        self.current_model: str | None = None
        self.horde_kudos_bump = 0  # screenshots grow the worker's totals between polls
        if instances:
            main = ServeConfig(name="main", port=5001, gpu_layers=99, horde=HordeSettings(
                enabled=True, worker_name="kobold-box", api_key="secret-key"))
            self.drafts["main"] = InstanceDraft(main, (self.gpus[0].uuid,) if self.gpus else ())
            self.drafts["chat-cpu"] = InstanceDraft(ServeConfig(name="chat-cpu", port=5002, parallel=2))
            self.states = {"main": "ready", "chat-cpu": "stopped"}

    def _track(self, *call: object) -> None:
        self.calls.append(call)

    # reads -------------------------------------------------------------------------
    def instances(self) -> list[InstanceView]:
        with self._lock:
            self.concurrent += 1
            self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            views = []
            for name, draft in self.drafts.items():
                state = self.states.get(name, "stopped")
                status = None
                if state == "ready" and draft.kind == "serve":
                    horde = busy_horde(self.horde_remaining) if draft.config.horde.enabled else {}
                    if horde:
                        horde["state"] = self.horde_state
                        bump = self.horde_kudos_bump
                        horde["kudos_session"] += 14.5 * bump + (bump % 3) * 6
                        horde["jobs_done"] += bump
                    status = fake_status(name, draft.config.port, horde, self.queue if name == "main" else (),
                                         n_batch=draft.config.batch_size, parallel=draft.config.parallel)
                gpus = ",".join(str(g.index) for g in self.gpus if g.uuid in draft.gpu_uuids) or "CPU"
                views.append(InstanceView(
                    name=name, state=state, port=draft.config.port, model=draft.config.model or "bundled",
                    gpus=gpus, pid=4242 if state == "ready" else None, restarts=1 if name == "main" else 0,
                    uptime_s=3723.0 if state == "ready" else None,
                    last_error=self.errors.get(name) if state in ("failed", "unreachable") else None,
                    status=status, kind=draft.kind, facts=self.facts.get(name), vram_mib=self.vram.get(name),
                    rss_bytes=1_288_490_188 if state == "ready" else None, cpu_pct=187.0 if state == "ready" else None,
                    url=draft.url if draft.kind == "remote" else f"http://127.0.0.1:{draft.config.port}",
                    command=draft.command,
                ))
            return views
        finally:
            with self._lock:
                self.concurrent -= 1

    def gpu_report(self) -> GpuReport:
        if self.gpu_block is not None:
            self.gpu_block.wait(10)
        if not self.gpus:
            return GpuReport((), "NVML could not load libnvidia-ml.so.1 (no NVIDIA driver installed)", "",
                             machine=self.machine)
        cvd = ",".join(g.uuid for g in self.gpus if g.enabled)
        return GpuReport(tuple(self.gpus), None, cvd, "550.54", self.machine)

    def set_gpu_order(self, uuids: Sequence[str]) -> str:
        self._track("set_gpu_order", tuple(uuids))
        by_uuid = {g.uuid: g for g in self.gpus}
        self.gpus = [by_uuid[u] for u in uuids]
        return self.gpu_report().cuda_visible_devices

    def set_gpu_enabled(self, uuid: str, enabled: bool) -> str:
        self._track("set_gpu_enabled", uuid, enabled)
        self.gpus = [replace(g, enabled=enabled) if g.uuid == uuid else g for g in self.gpus]
        return self.gpu_report().cuda_visible_devices

    def catalog(self) -> list[CatalogModel]:
        return [
            CatalogModel("gemma-3-270m-it-Q4_K_M", "bundled", 253_000_000, 18, 32768, "Q4_K_M"),
            CatalogModel("Mistral-7B-Instruct-v0.3-Q5_K_M", "/models/Mistral-7B-Instruct-v0.3-Q5_K_M.gguf",
                         5_136_000_000, 32, 32768, "Q5_K_M"),
            CatalogModel("Llama-3.1-8B-Instruct-Q4_K_M", "/models/Llama-3.1-8B-Instruct-Q4_K_M.gguf",
                         4_920_000_000, 32, 131072, "Q4_K_M"),
        ]

    def fit_estimate(self, model, gpu_layers, ctx, parallel, gpu_uuids) -> FitEstimate:
        need = 300 + 150 * max(gpu_layers, 0) + ctx / 16
        free = sum(g.mem_total_mib - g.mem_used_mib for g in self.gpus if g.uuid in gpu_uuids)
        fits = need <= free
        verdict = "fits" if fits else "does not fit: lower gpu_layers or ctx"
        return FitEstimate(fits, need, free, f"needs {need / 1024:.1f} GiB of {free / 1024:.1f} GiB free: {verdict}")

    def port_problem(self, port: int, instance: str | None) -> str | None:
        own = self.drafts[instance].config.port if instance in self.drafts else None
        if port in self.taken_ports and port != own:
            return f"port {port} is taken by pid 4242 (koboldcpp); pick another port"
        return None

    def default_draft(self) -> InstanceDraft:
        port = 5001
        while port in self.taken_ports:
            port += 1
        name = "default" if "default" not in self.drafts else f"instance-{len(self.drafts) + 1}"
        return InstanceDraft(ServeConfig(name=name, port=port), tuple(g.uuid for g in self.gpus if g.enabled))

    def draft_for(self, name: str) -> InstanceDraft:
        return self.drafts[name]

    # changes -----------------------------------------------------------------------
    def save_instance(self, draft: InstanceDraft, original_name: str | None) -> None:
        self._track("save_instance", draft.config.name, original_name)
        if original_name and original_name != draft.config.name:
            self.drafts.pop(original_name)
            self.states[draft.config.name] = self.states.pop(original_name, "stopped")
        self.drafts[draft.config.name] = draft
        self.states.setdefault(draft.config.name, "stopped")

    def start_instance(self, name: str) -> None:
        self._track("start_instance", name)
        if name not in self.drafts:
            raise BackendError(f"no instance called {name!r}: create it with n")
        self.states[name] = "ready"

    def stop_instance(self, name: str) -> None:
        self._track("stop_instance", name)
        self.states[name] = "stopped"

    def restart_instance(self, name: str) -> None:
        self._track("restart_instance", name)
        self.states[name] = "ready"

    def switch_model(self, name: str, model: str, progress) -> None:
        self._track("switch_model", name, model)
        progress(f"stopping {name}", 0.2)
        self.states[name] = "stopped"
        progress(f"starting {name} on {model}", 0.5)
        self.drafts[name] = replace(self.drafts[name], config=replace(self.drafts[name].config, model=model))
        progress("loading the model", 0.8)
        self.states[name] = "ready"
        progress("ready", 1.0)

    def set_batch_size(self, name: str, batch_size: int) -> None:
        self._track("set_batch_size", name, batch_size)
        d = self.drafts[name]
        self.drafts[name] = replace(d, config=replace(d.config, batch_size=batch_size))

    def abort(self, instance: str, genkey: str) -> bool:
        self._track("abort", instance, genkey)
        return True

    def horde_start(self, instance: str) -> None:
        self._track("horde_start", instance)

    def horde_stop(self, instance: str) -> None:
        self._track("horde_stop", instance)

    def horde_maintenance(self, instance: str, enabled: bool) -> None:
        self._track("horde_maintenance", instance, enabled)

    def dismiss_failure(self, name: str) -> None:
        self._track("dismiss_failure", name)
        if self.states.get(name) == "failed":
            self.states[name] = "stopped"
            self.errors.pop(name, None)

    def check_model(self, name: str, model: str) -> str | None:
        self._track("check_model", name, model)
        return self.model_problems.get(model)

    def stream_prompt(self, instance: str, prompt: str, max_tokens: int,
                      temperature: float | None = None) -> Iterator[str]:
        self._track("stream_prompt", instance, prompt)
        self.last_sampling = (max_tokens, temperature)
        self.horde_remaining = 20.0  # a local request restarts the window
        yield from self.stream_tokens

    def log_tail(self, instance: str, lines: int = 200) -> list[str]:
        return self.log[-lines:]

    def gateway_report(self) -> GatewayReport:
        from koboldtui.gateway.backends import GATEWAY_COMMAND  # as BackendTable: the gateway is no model

        choices = tuple((name, "instance") for name, d in self.drafts.items()
                        if not (d.kind == "command" and GATEWAY_COMMAND.search(d.command)))
        current = (self.gateway_status or {}).get("current_model") or self.current_model
        return GatewayReport(url="http://127.0.0.1:5000", enabled=self.gateway_enabled, status=self.gateway_status,
                             reason=None if self.gateway_status else "nothing listens there",
                             current_model=current, choices=choices)

    def use_model(self, name: str) -> None:
        self._track("use_model", name)
        if name not in self.drafts:
            raise BackendError(f"there is no instance or pool named {name!r}")
        self.current_model = name
        if self.gateway_status is not None:
            self.gateway_status = dict(self.gateway_status, current_model=name)

    def get_setting(self, key: str, default: str | None = None) -> str | None:
        return self.settings.get(key, default)

    def set_setting(self, key: str, value: str) -> None:
        self._track("set_setting", key, value)
        self.settings[key] = value

    def close(self, stop_instances: bool) -> None:
        self._track("close", stop_instances)


def screen_text(app) -> str:
    """The terminal as plain text lines (what a person reads), from the app's SVG export."""
    import html
    import re

    svg = app.export_screenshot()
    rows: dict[float, list[tuple[float, str]]] = {}
    pattern = r'<text class="[^"]*" x="([\d.]+)" y="([\d.]+)" textLength="[\d.]+" clip-path="[^"]*">(.*?)</text>'
    for m in re.finditer(pattern, svg, re.DOTALL):
        rows.setdefault(float(m.group(2)), []).append((float(m.group(1)), html.unescape(m.group(3))))
    lines = []
    for y in sorted(rows):
        line = ""
        for x, text in sorted(rows[y]):
            line = line.ljust(round(x / 12.2)) + text
        lines.append(line.rstrip())
    return "\n".join(lines).replace("\xa0", " ")
