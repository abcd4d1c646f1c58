"""``PanelBackend``: the one door between the panel's screens and the rest of koboldtui.

Screens never import the supervisor, NVML or HTTP code; they call these synchronous
methods from thread workers and get back small immutable views. That keeps the UI
testable with a fake (no GPUs or Horde here) and lets the real modules change freely.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from koboldtui.config import ServeConfig
from koboldtui.status import InstanceStatus
from koboldtui.system.machine import MachineReport

if TYPE_CHECKING:
    from koboldtui.control.flavour import FlavourFacts

# Instance states as the supervisor reports them.
RUNNING_STATES = frozenset({"starting", "loading", "ready"})
FINISHED_REQUEST_STATES = frozenset({"done", "aborted", "error"})

ProgressCallback = Callable[[str, float], None]


class BackendError(RuntimeError):
    """A failed panel action, worded so the person can act on it (what, why, what to do)."""


@dataclass(frozen=True)
class GpuView:
    """One GPU as the dashboard draws it; ``None`` readings mean "not available"."""

    uuid: str
    index: int
    name: str
    mem_used_mib: float
    mem_total_mib: float
    util_pct: float | None = None
    temp_c: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    ours_mib: float = 0.0  # VRAM held by our instance processes
    enabled: bool = True
    vram_history: tuple[float, ...] = ()  # percent of total, oldest first
    util_history: tuple[float, ...] = ()

    @property
    def mem_fraction(self) -> float:
        return self.mem_used_mib / self.mem_total_mib if self.mem_total_mib > 0 else 0.0


@dataclass(frozen=True)
class GpuReport:
    """All GPUs in priority order, or why there are none (CPU mode), and the machine's gauges."""

    gpus: tuple[GpuView, ...] = ()
    unavailable_reason: str | None = None  # set when NVML finds no usable GPU
    cuda_visible_devices: str = ""  # what a new instance would get ("" = CPU only)
    driver: str = ""
    machine: MachineReport | None = None  # CPU, RAM and load, read in the same poll


@dataclass(frozen=True)
class InstanceView:
    """One supervised instance plus its live status when it answers."""

    name: str
    state: str  # stopped | starting | loading | ready | stopping | failed
    port: int
    model: str
    gpus: str = "CPU"
    pid: int | None = None
    restarts: int = 0
    uptime_s: float | None = None
    last_error: str | None = None
    status: InstanceStatus | None = None
    kind: str = "serve"  # serve | command (any server command line) | remote (watched only)
    facts: FlavourFacts | None = None  # what a command/remote server says it is, when it answers
    vram_mib: float | None = None  # VRAM its processes hold (NVML by pid); None: none or unknown
    rss_bytes: int | None = None  # resident memory of its process tree; None: not running here
    cpu_pct: float | None = None  # CPU % of one core over the last poll (like top); None: unknown
    url: str = ""  # where to send requests: http://127.0.0.1:5001, or a remote's URL ("" = unknown)
    command: str = ""  # kind command: the server's command line as saved (with {port}, {model})

    @property
    def foreign(self) -> FlavourFacts | None:
        """The facts of a server that is not koboldtui (no koboldtui status to draw from)."""
        return self.facts if self.facts is not None and self.status is None else None

    @property
    def address(self) -> str:
        """Where requests go, for a narrow column: ':5001' on this machine, 'gpu-box:5001' elsewhere
        (the dashboard's Instances border spells the selected one's whole URL)."""
        where = self.url.split("://", 1)[-1].rstrip("/") if self.url else f"127.0.0.1:{self.port}"
        for local in ("127.0.0.1:", "localhost:", "[::1]:"):
            if where.startswith(local):
                return ":" + where[len(local):]
        return where

    @property
    def program(self) -> str:
        """A command instance's program (the first word of its command line, without the folder)."""
        first = self.command.split(maxsplit=1)[0] if self.command.strip() else ""
        return first.strip("'\"").rsplit("/", 1)[-1]

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES

    @property
    def is_gateway(self) -> bool:
        """The gateway saved as a command instance (``koboldtui gateway enable``): shown as the gateway,
        never as a model."""
        from koboldtui.gateway.backends import GATEWAY_COMMAND

        return self.kind == "command" and GATEWAY_COMMAND.search(self.command) is not None

    @property
    def horde(self) -> dict:
        return dict(self.status.horde) if self.status is not None else {}


@dataclass(frozen=True)
class GatewayReport:
    """The box's gateway as the panel shows it: where it is, whether it answers, what it routes.

    ``status`` is the gateway's own ``/api/koboldtui/gateway`` JSON (None when it does not
    answer: ``reason`` says why); ``choices`` are the names the current model may be, read from
    the store, so the picker works while the gateway is down too.
    """

    url: str = "http://127.0.0.1:5000"
    enabled: bool = False  # saved as the supervised instance "gateway" (`koboldtui gateway enable`)
    status: dict | None = None
    reason: str | None = None
    current_model: str | None = None  # the saved setting (what the gateway uses when it runs)
    choices: tuple[tuple[str, str], ...] = ()  # (name, "instance" | "pool")

    @property
    def state(self) -> str:
        """answering | not answering | not enabled (nothing saved and nothing answering)."""
        if self.status is not None:
            return "answering"
        return "not answering" if self.enabled else "not enabled"


@dataclass(frozen=True)
class CatalogModel:
    """A GGUF file the user can pick; sizes let the form estimate VRAM."""

    name: str
    path: str
    size_bytes: int = 0
    n_layers: int | None = None
    ctx_train: int | None = None
    quant: str = ""
    error: str | None = None  # a broken file: listed with why, never pickable


@dataclass(frozen=True)
class FitEstimate:
    """Whether a model with these settings fits the chosen GPUs, in words and MiB."""

    fits: bool
    need_mib: float
    free_mib: float
    text: str


@dataclass
class InstanceDraft:
    """What the new/edit form produces: the serve config plus the GPU set (empty = CPU).

    ``stored_gpus`` / ``stored_gpu_uuids`` remember the spec's own selection ("cpu", "auto"
    or a list) and what it meant when the form opened, so saving an unchanged form keeps
    it exactly (a CPU instance never turns into "auto").
    """

    config: ServeConfig = field(default_factory=ServeConfig)
    gpu_uuids: tuple[str, ...] = ()
    auto_restart: bool = True
    kind: str = "serve"  # serve | command | remote
    command: str = ""  # kind command: the server's command line with {port} (and {model})
    health: str = ""  # kind command: readiness path ("" = first known path answering 200)
    url: str = ""  # kind remote: http://host:port
    autostart: bool = True
    stored_gpus: str | tuple[str, ...] | None = None
    stored_gpu_uuids: tuple[str, ...] = ()


class PanelBackend(Protocol):
    """Everything the panel reads or changes; each call may block, so call it off the UI thread."""

    def instances(self) -> list[InstanceView]:
        """Every known instance with its live status (None when it does not answer)."""

    def gpu_report(self) -> GpuReport:
        """GPU telemetry with history for sparklines, in priority order."""

    def set_gpu_order(self, uuids: Sequence[str]) -> str:
        """Store a new GPU priority order; return the resulting CUDA_VISIBLE_DEVICES."""

    def set_gpu_enabled(self, uuid: str, enabled: bool) -> str:
        """Enable/disable one GPU for new instances; return the resulting CUDA_VISIBLE_DEVICES."""

    def catalog(self) -> list[CatalogModel]:
        """GGUF models the user can choose from (bundled first)."""

    def fit_estimate(
        self, model: str | None, gpu_layers: int, ctx: int, parallel: int, gpu_uuids: Sequence[str]
    ) -> FitEstimate:
        """Will these settings fit in the free VRAM of these GPUs?"""

    def port_problem(self, port: int, instance: str | None) -> str | None:
        """Why this port cannot be used (taken, out of range), or None when it is free."""

    def default_draft(self) -> InstanceDraft:
        """A sensible new instance: bundled model, a free port, the enabled GPUs."""

    def draft_for(self, name: str) -> InstanceDraft:
        """The stored settings of an instance, for the edit form."""

    def save_instance(self, draft: InstanceDraft, original_name: str | None) -> None:
        """Create (original_name None) or update an instance spec."""

    def start_instance(self, name: str) -> None: ...

    def stop_instance(self, name: str) -> None: ...

    def restart_instance(self, name: str) -> None: ...

    def switch_model(self, name: str, model: str, progress: ProgressCallback) -> None:
        """Stop the instance, change its model, start it and wait for ready, reporting steps."""

    def set_batch_size(self, name: str, batch_size: int) -> None:
        """Store a new n_batch and reload the instance so it takes effect."""

    def abort(self, instance: str, genkey: str) -> bool:
        """Abort one request; True when the instance knew it."""

    def horde_start(self, instance: str) -> None: ...

    def horde_stop(self, instance: str) -> None: ...

    def horde_maintenance(self, instance: str, enabled: bool) -> None: ...

    def dismiss_failure(self, name: str) -> None:
        """Forget a failure the person has read: the row goes from failed (and why) to stopped."""

    def check_model(self, name: str, model: str) -> str | None:
        """Why ``model`` cannot replace the instance's model (unreadable, no tensors, too big), or None."""

    def stream_prompt(self, instance: str, prompt: str, max_tokens: int,
                      temperature: float | None = None) -> Iterator[str]:
        """Send a local request (it restarts the Horde countdown) and yield tokens as they come."""

    def log_tail(self, instance: str, lines: int = 200) -> list[str]: ...

    def gateway_report(self) -> GatewayReport:
        """The gateway's URL, its status JSON when it answers (a short timeout), the current model."""

    def use_model(self, name: str) -> None:
        """Make an instance or pool the box's current model, as ``koboldtui gateway use NAME`` does."""

    def get_setting(self, key: str, default: str | None = None) -> str | None: ...

    def set_setting(self, key: str, value: str) -> None: ...

    def close(self, stop_instances: bool) -> None:
        """Leave the panel: stop instances, or leave them running to reattach later."""
