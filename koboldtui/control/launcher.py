"""Everything checked and built before an instance process is spawned: model, port, GPUs, flags, env.

Each check raises ``StartError`` with what to do, so a refused start leaves no process,
no launch row and no log behind.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from koboldtui.config import ServeConfig, new_launch_token
from koboldtui.control import logs as logfiles
from koboldtui.control.gpu_plan import GpuPlanner, describe_plan
from koboldtui.control.ports import PortUnavailableError, check_port_available
from koboldtui.control.process import child_environment
from koboldtui.control.spec import InstanceSpec
from koboldtui.control.state import StartError
from koboldtui.models.bundled import BundledModelError, resolve_model_path
from koboldtui.paths import AppPaths

CommandBuilder = Callable[[Sequence[str]], list[str]]


@dataclass(frozen=True)
class PreparedLaunch:
    """A launch that passed every check: what to run, with which env, logging where."""

    config: ServeConfig | None  # None for a command instance (not `koboldtui serve`)
    command: list[str]
    env: dict[str, str]
    token: str
    log_path: Path
    header: str
    cwd: Path | None = None  # a command instance's own folder (None: the data dir)


def prepare_launch(
    spec: InstanceSpec,
    *,
    paths: AppPaths,
    secret: Mapping[str, str],
    planner: GpuPlanner,
    command_builder: CommandBuilder,
    environ: Mapping[str, str],
    port_owner_hint: str | None = None,
    token: str | None = None,
) -> PreparedLaunch:
    """Check the model, the port and the GPUs of a ``koboldtui serve`` instance, then build its command line and env."""
    name = spec.name
    try:
        model_path = resolve_model_path(spec.model, paths)
    except (FileNotFoundError, ValueError, BundledModelError) as exc:
        raise StartError(f"cannot start {name!r}: {exc}") from exc
    try:
        check_port_available(spec.host, spec.port, owner_hint=port_owner_hint)
    except PortUnavailableError as exc:
        raise StartError(f"cannot start {name!r}: {exc}") from exc
    plan = planner(spec, model_path)  # raises StartError (GPU gone, disabled, does not fit)
    token = token or new_launch_token()  # never starts with '-' (argparse would take it for an option)
    config = plan.apply(
        spec.to_serve_config(
            launch_token=token, api_key=secret.get("api_key"), horde_key=secret.get("horde_key")
        )
    ).with_changes(model=str(model_path))
    problems = config.validate()
    if problems:
        raise StartError(f"cannot start {name!r}: " + "; ".join(problems))
    command = command_builder(config.to_argv())
    env = child_environment(environ, {**spec.extra_env, **plan.env(), **config.secret_env()})
    shown = " ".join("<token>" if a == token else shlex.quote(a) for a in command)
    header = logfiles.launch_header(
        name, time.strftime("%Y-%m-%d %H:%M:%S"), describe_plan(plan), shown
    )
    log_path = logfiles.log_path_for(paths.log_dir, name)
    return PreparedLaunch(config, command, env, token, log_path, header)
