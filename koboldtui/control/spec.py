"""``InstanceSpec``: what a user saved about one instance, kept as JSON in the store.

One type for the CLI, the panel and the supervisor, so an instance is described the same
way everywhere; ``to_serve_config`` is the single bridge to ``koboldtui serve`` flags.
Secrets (the Horde key, an API key) are never part of the spec JSON: they live in the
0600 secrets file (``koboldtui.control.secrets``) and are passed in at launch.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from koboldtui.config import HordeSettings, ServeConfig
from koboldtui.models.bundled import BUNDLED_MODEL_ALIAS as BUNDLED

GpuSelection = str | list[str]  # "auto" | "cpu" | list of GPU UUIDs / indices

RESTART_POLICIES = ("no", "on-failure")
# what an instance is: our own `koboldtui serve`, any server command line we start, or a
# server elsewhere that we only watch (see koboldtui.control.command and .remote)
KIND_SERVE, KIND_COMMAND, KIND_REMOTE = "serve", "command", "remote"
KINDS = (KIND_SERVE, KIND_COMMAND, KIND_REMOTE)
# what a command instance's --cmd may contain, filled in at launch (koboldtui.control.command)
PLACEHOLDERS = ("{port}", "{model}", "{host}")
_PLACEHOLDER = re.compile(r"\{[A-Za-z_]+\}")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class SpecError(ValueError):
    """A spec a person must fix before it can be saved or started; the message says how."""


def parse_gpus(value: str | list[str] | None) -> GpuSelection:
    """Turn ``--gpus`` text ("auto", "cpu", "0,GPU-ab12...") into the stored selection."""
    if value is None:
        return "auto"
    if isinstance(value, list):
        items = [str(v).strip() for v in value if str(v).strip()]
    else:
        text = value.strip()
        if text.lower() in ("auto", "cpu"):
            return text.lower()
        items = [part.strip() for part in text.split(",") if part.strip()]
    if not items:
        raise SpecError("--gpus needs 'auto', 'cpu' or a comma-separated list of GPU indices/UUIDs")
    for item in items:
        if not (item.isdigit() or item.startswith(("GPU-", "MIG-"))):
            raise SpecError(
                f"--gpus item {item!r} is neither a GPU index (0, 1, ...) nor a UUID (GPU-...): "
                "see `koboldtui gpus` for the list"
            )
    if len(set(items)) != len(items):
        raise SpecError(f"--gpus lists a GPU twice: {','.join(items)}")
    return items


def gpus_label(gpus: GpuSelection) -> str:
    """How ``ps`` and the panel show a GPU selection."""
    return gpus if isinstance(gpus, str) else ",".join(gpus)


def _horde_public(horde: HordeSettings) -> dict[str, Any]:
    data = asdict(horde)
    data.pop("api_key", None)  # secret: stored in the secrets file, never in the spec JSON
    return data


@dataclass
class InstanceSpec:
    """One instance as the user configured it: model, port, GPUs, sizes, Horde, policies."""

    name: str
    port: int
    model: str = BUNDLED  # absolute path to a .gguf, or "bundled"
    host: str = "127.0.0.1"
    gpus: GpuSelection = "auto"
    gpu_layers: int = 0
    ctx: int = 4096
    batch_size: int = 512
    parallel: int = 4
    threads: int | None = None
    max_queue: int = 64
    horde: HordeSettings = field(default_factory=HordeSettings)
    autostart: bool = False
    restart: str = "no"  # "no" | "on-failure"
    extra_env: dict[str, str] = field(default_factory=dict)
    kind: str = KIND_SERVE  # "serve" | "command" | "remote"
    command: str = ""  # kind "command": the server's command line, with {port} (and {model}, {host})
    health: str = ""  # kind "command": readiness path; "" = the first known path that answers 200
    url: str = ""  # kind "remote": where the server is (http://host:port)
    workdir: str = ""  # kind "command": the folder it runs in (relative paths in --cmd); "" = data dir
    # the gateway (koboldtui.gateway): the model name clients ask for ("" = the model file's
    # stem; instances with the same alias form a pool), idle minutes before the gateway stops
    # an instance it started (0 = never), and a pin (the gateway never stops it)
    alias: str = ""
    ttl_min: float = 0.0
    pin: bool = False

    @property
    def uses_gpu(self) -> bool:
        return self.gpus != "cpu"

    @property
    def is_remote(self) -> bool:
        """Watched only: koboldtui neither starts nor stops it, and its port is on another box."""
        return self.kind == KIND_REMOTE

    def probe_host(self) -> str:
        """Where this machine reaches the instance (a wildcard bind is reached on loopback)."""
        if self.host in ("0.0.0.0", "", "*"):
            return "127.0.0.1"
        if self.host == "::":
            return "::1"
        return self.host

    def base_url(self) -> str:
        """Where this machine sends HTTP to the instance (a remote one: its saved URL)."""
        if self.is_remote:
            return self.url.rstrip("/")
        host = self.probe_host()
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def validate(self, *, api_key: str | None = None, horde_key: str | None = None) -> list[str]:
        """Problems in words (empty when fine): the spec's own checks plus ServeConfig's."""
        problems: list[str] = []
        if not NAME_PATTERN.match(self.name or ""):
            problems.append(
                f"instance name {self.name!r} is not usable: use 1-64 letters, digits, '.', '_' "
                "or '-', starting with a letter or digit"
            )
        if self.restart not in RESTART_POLICIES:
            problems.append(
                f"--restart {self.restart!r} must be one of: {', '.join(RESTART_POLICIES)}"
            )
        if self.gpu_layers < -1:
            problems.append("--gpu-layers must be -1 (all) or a count >= 0")
        for key in self.extra_env:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
                problems.append(f"extra env name {key!r} is not a valid environment variable name")
        if self.kind not in KINDS:
            problems.append(f"instance kind {self.kind!r} must be one of: {', '.join(KINDS)}")
        if self.kind != KIND_SERVE:
            return problems + kind_problems(self)  # the kind's own checks
        if self.model != BUNDLED and not Path(self.model).is_absolute():
            problems.append(f"model path {self.model!r} must be absolute (the CLI resolves it)")
        config = self.to_serve_config(api_key=api_key, horde_key=horde_key)
        problems += config.validate()
        return problems

    def to_serve_config(
        self,
        *,
        launch_token: str | None = None,
        api_key: str | None = None,
        horde_key: str | None = None,
        tensor_split: str | None = None,
        main_gpu: int = 0,
    ) -> ServeConfig:
        """The ``koboldtui serve`` settings for this spec (secrets and GPU layout passed in)."""
        horde = replace(self.horde, api_key=horde_key or "")
        return ServeConfig(
            model=self.model or BUNDLED,
            name=self.name,
            host=self.host,
            port=self.port,
            ctx=self.ctx,
            batch_size=self.batch_size,
            parallel=self.parallel,
            gpu_layers=0 if not self.uses_gpu else self.gpu_layers,
            threads=self.threads,
            tensor_split=tensor_split if self.uses_gpu else None,
            main_gpu=main_gpu if self.uses_gpu else 0,
            api_key=api_key or None,
            max_queue=self.max_queue,
            launch_token=launch_token,
            horde=horde,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form without secrets (what the store keeps)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["horde"] = _horde_public(self.horde)
        data["gpus"] = self.gpus if isinstance(self.gpus, str) else list(self.gpus)
        data["extra_env"] = dict(self.extra_env)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InstanceSpec:
        """Read a stored spec; unknown keys (from a newer version) are ignored."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        horde_known = {f.name for f in fields(HordeSettings)}
        horde_data = {k: v for k, v in dict(data.get("horde") or {}).items() if k in horde_known}
        horde_data.pop("api_key", None)
        values["horde"] = HordeSettings(**horde_data)
        values["gpus"] = parse_gpus(values.get("gpus", "auto"))
        values["extra_env"] = {
            str(k): str(v) for k, v in dict(values.get("extra_env") or {}).items()
        }
        return cls(**values)

    def with_changes(self, **changes: Any) -> InstanceSpec:
        return replace(self, **changes)


def kind_problems(spec: InstanceSpec) -> list[str]:
    """What is wrong with a command or remote spec, in words that say what to pass instead."""
    problems: list[str] = []
    if spec.horde.enabled:
        problems.append(
            f"koboldtui runs its Horde worker only in `koboldtui serve`; a {spec.kind} instance "
            "lends to the Horde with its own worker (KoboldCpp: --hordekey ...): drop --horde"
        )
    if spec.kind == KIND_COMMAND:
        if not 1 <= spec.port <= 65535:
            problems.append(f"port {spec.port} is out of range: pick one in 1-65535 with --port")
        if not spec.command.strip():
            problems.append('a command instance needs --cmd "server --port {port} ..."')
            return problems
        try:
            argv = shlex.split(spec.command)
        except ValueError as exc:
            return problems + [f"--cmd cannot be split into arguments ({exc}): check the quotes"]
        if "{port}" not in spec.command:
            problems.append(
                "--cmd must contain {port} where the server takes its port "
                '(e.g. --cmd "koboldcpp --port {port} ..."), so the port is checked and probed'
            )
        unknown = sorted(set(_PLACEHOLDER.findall(spec.command)) - set(PLACEHOLDERS))
        if unknown:
            problems.append(
                f"--cmd has unknown placeholders {', '.join(unknown)}: only "
                f"{', '.join(PLACEHOLDERS)} are filled in"
            )
        if argv and argv[0] in PLACEHOLDERS:
            problems.append("--cmd must start with the program to run, not a placeholder")
        if spec.health and not spec.health.startswith("/"):
            problems.append(f"--health {spec.health!r} must be a path starting with '/'")
        if spec.url:
            problems.append("a command instance runs here: drop --url (or drop --cmd for a remote one)")
        if spec.workdir and not os.path.isabs(spec.workdir):
            problems.append(f"the command's folder {spec.workdir!r} must be an absolute path")
    elif spec.kind == KIND_REMOTE:
        parts = urlsplit(spec.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.append(
                f"--url {spec.url!r} must look like http://host:port (an SSH tunnel's "
                "http://127.0.0.1:PORT works too)"
            )
        if spec.command:
            problems.append("a remote instance is not started here: drop --cmd")
        if spec.autostart:
            problems.append("a remote instance is not started here: drop --autostart")
    return problems
