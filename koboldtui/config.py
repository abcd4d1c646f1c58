"""Settings of one instance (``koboldtui serve``), shared by the CLI, the supervisor and tests.

``ServeConfig.to_argv()`` is the one place that turns a config into ``koboldtui serve``
flags, so the supervisor and the CLI parser can never drift apart.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, fields, replace
from typing import Any

from koboldtui.stop_budget import LOCAL_DRAIN_S

DEFAULT_PORT = 5001
DEFAULT_HORDE_URL = "https://aihorde.net/api"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def physical_cores() -> int:
    """Physical core count (llama.cpp runs best with one thread per physical core).

    ``os.cpu_count()`` counts hyper-threads; sched_getaffinity respects cgroups/taskset.
    We read /proc/cpuinfo's (physical id, core id) pairs where available.
    """
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        usable = os.cpu_count() or 1
    pairs: set[tuple[str, str]] = set()
    try:
        phys = core = ""
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "physical id":
                    phys = value
                elif key == "core id":
                    core = value
                    pairs.add((phys, core))
    except OSError:
        pass
    cores = len(pairs) if pairs else usable
    return max(1, min(cores, usable))


def new_launch_token() -> str:
    """A fresh launch token that can never be read as an option on a command line.

    ``secrets.token_urlsafe`` starts with ``-`` about 1 time in 60, and argparse then reads
    ``--launch-token -AbC`` as a missing value (exit 2, counted as a crash). Hex digits only.
    """
    return secrets.token_hex(16)


def parse_tensor_split(value: str | None) -> tuple[float, ...] | None:
    """'3,1' → (3.0, 1.0); raises ValueError with a hint on bad input."""
    if not value:
        return None
    try:
        parts = tuple(float(p) for p in value.replace("/", ",").split(",") if p.strip())
    except ValueError:
        raise ValueError(f"--tensor-split {value!r} must be numbers separated by commas, e.g. 3,1") from None
    if not parts or any(p < 0 for p in parts):
        raise ValueError(f"--tensor-split {value!r} must be non-negative numbers, e.g. 3,1")
    return parts


@dataclass
class HordeSettings:
    """What the AI Horde worker of one instance needs; off unless ``enabled``."""

    enabled: bool = False
    api_key: str = field(default="", repr=False)  # secret: never logged; also KOBOLDTUI_HORDE_KEY
    worker_name: str = ""
    url: str = DEFAULT_HORDE_URL
    window_s: float = 20.0  # local-priority window
    threads: int = 0  # Horde jobs in parallel: 0 = every spare slot (parallel - 1), else at most that
    max_length: int = 512
    model_name: str = ""  # default koboldcpp/<gguf basename>
    bridge_agent: str = ""  # default koboldtui:<version>:<url>
    nsfw: bool = False
    preempt: bool = False  # let a local request preempt a Horde sequence when slots are full


@dataclass
class ServeConfig:
    """Everything ``koboldtui serve`` takes; defaults are what a user gets with no flags."""

    model: str | None = None  # None / "bundled" = the bundled default model
    name: str = "default"
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    ctx: int = 4096  # context per request: each of the `parallel` slots gets this much KV
    batch_size: int = 512
    parallel: int = 4
    gpu_layers: int = 0
    threads: int | None = None  # None = physical cores
    tensor_split: str | None = None  # "3,1" style, passed to llama.cpp
    main_gpu: int = 0
    api_key: str | None = field(default=None, repr=False)
    max_queue: int = 64
    # Browsers: origins whose pages may call the client API ("*" = any, as KoboldCpp), and
    # Host names answered besides the listen address and loopback (DNS-rebinding guard).
    allow_origins: tuple[str, ...] = ("*",)
    allow_hosts: tuple[str, ...] = ()
    launch_token: str | None = None  # set by the supervisor so a later panel can reattach
    drain_s: float = LOCAL_DRAIN_S  # on stop, local requests may finish this long, then abort
    queue_timeout_s: float = 300.0  # a local request waits at most this long for a slot (then 503)
    horde: HordeSettings = field(default_factory=HordeSettings)

    def effective_threads(self) -> int:
        return self.threads if self.threads else physical_cores()

    def validate(self) -> list[str]:
        """Problems a person can fix, in words; empty when the config is usable."""
        problems = []
        if not (1 <= self.port <= 65535):
            problems.append(f"port {self.port} is out of range: pick one in 1-65535 with --port")
        if self.ctx < 64:
            problems.append(f"--ctx {self.ctx} is too small: use at least 64")
        if not (1 <= self.batch_size <= 65536):
            problems.append(f"--batch-size {self.batch_size} must be between 1 and 65536")
        if not (1 <= self.parallel <= 256):
            problems.append(f"--parallel {self.parallel} must be between 1 and 256")
        if self.threads is not None and self.threads < 1:
            problems.append("--threads must be at least 1")
        try:
            parse_tensor_split(self.tensor_split)
        except ValueError as exc:
            problems.append(str(exc))
        if self.max_queue < 1:
            problems.append("--max-queue must be at least 1")
        if self.queue_timeout_s <= 0:
            problems.append("--queue-timeout must be more than 0 seconds")
        if not (0 <= self.drain_s <= 60):
            problems.append(f"--drain-s {self.drain_s:g} must be between 0 and 60 seconds")
        if self.launch_token is not None and not self.launch_token.isalnum():
            problems.append("--launch-token must be letters and digits only (use config.new_launch_token())")
        if self.host not in LOOPBACK_HOSTS and not self.api_key:
            problems.append(
                f"--host {self.host} would expose the API beyond this machine without a key: "
                "add --api-key KEY (clients then send 'Authorization: Bearer KEY') or use 127.0.0.1"
            )
        if self.horde.enabled:
            if not self.horde.api_key:
                problems.append("the Horde worker needs an API key: pass --horde-key (or KOBOLDTUI_HORDE_KEY)")
            if not self.horde.worker_name:
                problems.append("the Horde worker needs a name: pass --horde-name NAME")
            if self.horde.window_s < 0:
                problems.append("--horde-window must be >= 0 seconds")
        return problems

    def to_argv(self) -> list[str]:
        """``koboldtui serve`` arguments reproducing this config (secrets go via env)."""
        argv = ["serve", "--name", self.name, "--host", self.host, "--port", str(self.port)]
        if self.model:
            argv += ["--model", self.model]
        argv += ["--ctx", str(self.ctx), "--batch-size", str(self.batch_size)]
        argv += ["--parallel", str(self.parallel), "--gpu-layers", str(self.gpu_layers)]
        argv += ["--main-gpu", str(self.main_gpu), "--max-queue", str(self.max_queue)]
        if self.threads:
            argv += ["--threads", str(self.threads)]
        if self.tensor_split:
            argv += ["--tensor-split", self.tensor_split]
        if self.launch_token:
            argv += ["--launch-token", self.launch_token]
        if self.drain_s != LOCAL_DRAIN_S:
            argv += ["--drain-s", f"{self.drain_s:g}"]
        if self.queue_timeout_s != 300.0:
            argv += ["--queue-timeout", f"{self.queue_timeout_s:g}"]
        if self.allow_origins != ("*",):
            argv += [arg for origin in self.allow_origins for arg in ("--allow-origin", origin)]
        argv += [arg for host in self.allow_hosts for arg in ("--allow-host", host)]
        h = self.horde
        if h.enabled:
            argv += ["--horde", "--horde-name", h.worker_name, "--horde-url", h.url]
            argv += ["--horde-window", str(h.window_s), "--horde-threads", str(h.threads)]
            argv += ["--horde-max-length", str(h.max_length)]
            if h.model_name:
                argv += ["--horde-model-name", h.model_name]
            if h.bridge_agent:
                argv += ["--horde-bridge-agent", h.bridge_agent]
            if h.nsfw:
                argv += ["--horde-nsfw"]
            if h.preempt:
                argv += ["--horde-preempt"]
        return argv

    def secret_env(self) -> dict[str, str]:
        """Secrets handed to a child through its environment, never its argv (ps shows argv)."""
        env = {}
        if self.api_key:
            env["KOBOLDTUI_API_KEY"] = self.api_key
        if self.horde.enabled and self.horde.api_key:
            env["KOBOLDTUI_HORDE_KEY"] = self.horde.api_key
        return env

    def with_changes(self, **changes: Any) -> ServeConfig:
        return replace(self, **changes)


def serve_config_field_names() -> list[str]:
    return [f.name for f in fields(ServeConfig)]
