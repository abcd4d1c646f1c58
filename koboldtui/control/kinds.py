"""One object per kind of instance (serve, command, remote): how it is checked, prepared, launched and probed.

The kind of an instance is decided here once (``InstanceKinds.of``); the supervisor asks
the kind object instead of testing ``spec.kind`` itself. A serve instance is our own
``koboldtui serve`` (token on its command line, ``/health`` for readiness); a command
instance is any server command line (token in its environment, a health path found by
trying the known ones); a remote instance is never started or stopped here, only looked at.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from koboldtui.control.command import prepare_command_launch, probe_command_health
from koboldtui.control.gpu_plan import GpuPlanner
from koboldtui.control.launcher import CommandBuilder, PreparedLaunch, prepare_launch
from koboldtui.control.probe import Health, probe_health_detail
from koboldtui.control.reattach import LaunchCheck, check_launch
from koboldtui.control.spec import KIND_COMMAND, KIND_REMOTE, InstanceSpec
from koboldtui.control.state import StartError
from koboldtui.paths import AppPaths
from koboldtui.store.instances import Launch


@dataclass(frozen=True)
class Look:
    """One readiness look: the verdict, a load error the instance reported, and the health path that answered."""

    health: Health
    error: str | None = None
    path: str = ""


@dataclass(frozen=True)
class LaunchTools:
    """What preparing a launch needs from the supervisor's settings (the same for every kind)."""

    paths: AppPaths
    planner: GpuPlanner
    command_builder: CommandBuilder
    environ: Mapping[str, str]


class ServeKind:
    """Our own ``koboldtui serve``: model, port and GPU checks, ``/health`` for readiness."""

    startable = True

    def __init__(self, tools: LaunchTools) -> None:
        self._tools = tools

    def health_path(self, spec: InstanceSpec) -> str | None:
        """None: our own ``/health`` (which also reports a failed model load)."""
        return None

    def prepare(
        self, spec: InstanceSpec, *, token: str, secret: Mapping[str, str], port_owner_hint: str | None
    ) -> PreparedLaunch:
        t = self._tools
        return prepare_launch(
            spec,
            paths=t.paths,
            secret=secret,
            planner=t.planner,
            command_builder=t.command_builder,
            environ=t.environ,
            port_owner_hint=port_owner_hint,
            token=token,
        )

    def probe(self, base_url: str, health_path: str | None, api_key: str | None, timeout_s: float) -> Look:
        health, error = probe_health_detail(base_url, api_key=api_key, timeout_s=timeout_s)
        return Look(health, error)

    def check(self, launch: Launch, spec: InstanceSpec, api_key: str | None) -> LaunchCheck:
        """Is ``launch`` still this instance (its token confirmed), before adopting it?"""
        return check_launch(launch, spec.host, api_key=api_key)


class CommandKind(ServeKind):
    """Any server command line: program and port checks, readiness on its health path."""

    def health_path(self, spec: InstanceSpec) -> str | None:
        return spec.health  # "" until the first known path answers 200

    def prepare(
        self, spec: InstanceSpec, *, token: str, secret: Mapping[str, str], port_owner_hint: str | None
    ) -> PreparedLaunch:
        t = self._tools
        return prepare_command_launch(
            spec,
            paths=t.paths,
            planner=t.planner,
            environ=t.environ,
            port_owner_hint=port_owner_hint,
            token=token,
        )

    def probe(self, base_url: str, health_path: str | None, api_key: str | None, timeout_s: float) -> Look:
        look = probe_command_health(base_url, health_path or "", api_key=api_key, timeout_s=timeout_s)
        return Look(look.health, None, look.path)

    def check(self, launch: Launch, spec: InstanceSpec, api_key: str | None) -> LaunchCheck:
        return check_launch(launch, spec.host, api_key=api_key, health_path=spec.health)


class RemoteKind:
    """A server on another machine: looked at in the background, never started or stopped here."""

    startable = False

    def refuse(self, spec: InstanceSpec, verb: str) -> StartError:
        """The error for starting or stopping a remote instance."""
        where = "start it on its own machine" if verb == "start" else "stop it on its own machine"
        return StartError(
            f"{spec.name!r} is a remote instance ({spec.url}): koboldtui watches it but does not "
            f"{verb} it; {where}"
        )


class InstanceKinds:
    """The three kind objects, and the one place that picks the one for a spec."""

    def __init__(self, tools: LaunchTools) -> None:
        self.serve = ServeKind(tools)
        self.command = CommandKind(tools)
        self.remote = RemoteKind()

    def of(self, spec: InstanceSpec) -> ServeKind | CommandKind | RemoteKind:
        if spec.kind == KIND_REMOTE:
            return self.remote
        if spec.kind == KIND_COMMAND:
            return self.command
        return self.serve


def default_environ(environ: Mapping[str, str] | None) -> dict[str, str]:
    """The environment children inherit from: ours unless a test gives one."""
    return dict(os.environ if environ is None else environ)


__all__ = ["InstanceKinds", "LaunchTools", "Look", "default_environ"]
