"""Command instances: any server command line (KoboldCpp, llama-server, sd.cpp, whisper.cpp...) run like our own.

A command instance gets the lifecycle of a ``koboldtui serve`` child (own session, GPU env
from the GPU priority, port check, log file, restart, reattach, stop with grace); what
differs is only what is launched, how readiness is probed, and how a later controller
recognises it. The last is the launch token in the child's environment
(``KOBOLDTUI_LAUNCH_TOKEN``, read back from ``/proc/PID/environ``), since a foreign server
neither takes ``--launch-token`` nor reports it.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from koboldtui.control import logs as logfiles
from koboldtui.control.ports import PortUnavailableError, check_port_available
from koboldtui.control.probe import Health, _headers, _http
from koboldtui.control.gpu_plan import GpuPlanner, describe_plan
from koboldtui.control.launcher import PreparedLaunch
from koboldtui.control.process import LAUNCH_TOKEN_ENV, child_environment
from koboldtui.control.spec import (  # noqa: F401 - kind_problems re-exported
    BUNDLED,
    PLACEHOLDERS,
    InstanceSpec,
    kind_problems,
)
from koboldtui.control.state import StartError
from koboldtui.models.bundled import BundledModelError, resolve_model_path
from koboldtui.paths import AppPaths

# tried in order when no --health is given: the first that answers 200 is the readiness path
# (llama-server, sd.cpp, whisper.cpp: /health; KoboldCpp: /api/extra/version; OpenAI-style:
# /v1/models; A1111-style: /sdapi/v1/sd-models; anything else: its front page)
HEALTH_CANDIDATES = ("/health", "/api/extra/version", "/v1/models", "/sdapi/v1/sd-models", "/")


def command_argv(spec: InstanceSpec, model: str) -> list[str]:
    """The command line with ``{port}``, ``{model}`` and ``{host}`` filled in (no shell)."""
    values = {"{port}": str(spec.port), "{model}": model, "{host}": spec.host}
    argv = []
    for part in shlex.split(spec.command):
        for placeholder, value in values.items():
            part = part.replace(placeholder, value)
        argv.append(part)
    return argv


def _model_for(spec: InstanceSpec, paths: AppPaths) -> str:
    """What ``{model}`` stands for: the saved path, or the bundled GGUF's (assembled if needed)."""
    if "{model}" not in spec.command:
        return spec.model
    if spec.model in ("", BUNDLED):
        try:
            return str(resolve_model_path(None, paths))
        except (FileNotFoundError, ValueError, BundledModelError) as exc:
            raise StartError(f"cannot start {spec.name!r}: {exc}") from exc
    if not Path(spec.model).exists():
        raise StartError(
            f"cannot start {spec.name!r}: the model {spec.model} does not exist; "
            f"change it with `koboldtui instance edit {spec.name} --model PATH`"
        )
    return spec.model


def prepare_command_launch(
    spec: InstanceSpec,
    *,
    paths: AppPaths,
    planner: GpuPlanner,
    environ: Mapping[str, str],
    port_owner_hint: str | None = None,
    token: str | None = None,
) -> PreparedLaunch:
    """Check the port, the program and the GPUs of a command instance, then build its argv and env."""
    name = spec.name
    model = _model_for(spec, paths)
    argv = command_argv(spec, model)
    cwd = Path(spec.workdir) if spec.workdir else None
    if cwd is not None and not cwd.is_dir():
        raise StartError(
            f"cannot start {name!r}: its folder {cwd} does not exist; re-add it from the folder "
            "its command expects, or give absolute paths in --cmd"
        )
    first = argv[0]
    if os.sep in first and not os.path.isabs(first) and cwd is not None:
        first = str(cwd / first)  # ./koboldcpp: relative to the folder it was added from
    program = shutil.which(first)
    if program is None:
        raise StartError(
            f"cannot start {name!r}: the program {argv[0]!r} was not found (not on PATH, or not "
            f"executable); give its full path with `koboldtui instance edit {name} --cmd \"...\"`"
        )
    try:
        check_port_available(spec.host, spec.port, owner_hint=port_owner_hint)
    except PortUnavailableError as exc:
        raise StartError(f"cannot start {name!r}: {exc}") from exc
    # the GPU set only: what the command loads is its own business, so no VRAM fit check
    plan = planner(spec.with_changes(gpu_layers=0), Path(model or "."))
    token = token or secrets.token_urlsafe(18)
    env = child_environment(environ, {**spec.extra_env, **plan.env(), LAUNCH_TOKEN_ENV: token})
    header = logfiles.launch_header(
        name, time.strftime("%Y-%m-%d %H:%M:%S"), describe_plan(plan), shlex.join(argv)
    )
    log_path = logfiles.log_path_for(paths.log_dir, name)
    return PreparedLaunch(None, [program, *argv[1:]], env, token, log_path, header, cwd)


@dataclass(frozen=True)
class CommandHealth:
    """One readiness look at a command instance: the verdict and the path that gave it ("" if none)."""

    health: Health
    path: str


def probe_command_health(
    base_url: str, path: str, *, api_key: str | None = None, timeout_s: float = 1.0
) -> CommandHealth:
    """GET the health path (or, when ``path`` is "", the known paths in turn): 200 ready, 503 loading.

    No answer at all is "down" at once (the other paths would not answer either); an answer
    that is neither (404 on every known path) is "error": alive, readiness unknown.
    """
    for candidate in (path,) if path else HEALTH_CANDIDATES:
        try:
            response = _http().get(
                base_url + candidate, headers=_headers(api_key), timeout=timeout_s
            )
        except httpx.HTTPError:
            return CommandHealth(Health.DOWN, "")
        if response.status_code == 200:
            return CommandHealth(Health.READY, candidate)
        if response.status_code == 503:
            return CommandHealth(Health.LOADING, "")
    return CommandHealth(Health.ERROR, "")
