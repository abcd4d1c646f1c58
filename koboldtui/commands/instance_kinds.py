"""How the instance commands take and show an instance's kind: ``--cmd``/``--url`` flags, and the KIND/SERVES cells."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from koboldtui.control.flavour import FlavourFacts
from koboldtui.control.remote import facts_for
from koboldtui.control.spec import KIND_COMMAND, KIND_REMOTE, KIND_SERVE, InstanceSpec, SpecError
from koboldtui.control.state import InstanceSnapshot
from koboldtui.control.supervisor import Supervisor


def kind_changes(cmd: str | None, url: str | None, health: str | None) -> dict[str, Any]:
    """Spec changes for ``--cmd`` (a command instance), ``--url`` (a remote one) and ``--health``."""
    changes: dict[str, Any] = {}
    if cmd is not None:
        # relative paths in the command mean what they meant where it was typed
        changes.update(
            kind=KIND_COMMAND if cmd.strip() else KIND_SERVE,
            command=cmd,
            url="",
            workdir=os.getcwd() if cmd.strip() else "",
        )
    if url is not None:
        parts = urlsplit(url.strip())
        try:
            port = parts.port
        except ValueError as exc:
            raise SpecError(f"--url {url!r} has a bad port ({exc}): use http://host:port") from exc
        default = 443 if parts.scheme == "https" else 80
        changes.update(
            kind=KIND_REMOTE, url=url.strip().rstrip("/"), command="", port=port or default,
            autostart=False,
        )
    if health is not None:
        changes["health"] = health
    return changes


def kind_label(spec: InstanceSpec) -> str:
    """'serve', 'command' or 'remote' for the KIND column."""
    return spec.kind


def model_cell(spec: InstanceSpec) -> str:
    """The MODEL column: the GGUF's file name, a command's program, or a remote URL."""
    if spec.kind == KIND_REMOTE:
        return spec.url
    if spec.kind == KIND_COMMAND:
        try:
            program = shlex.split(spec.command)[0]
        except (ValueError, IndexError):
            program = spec.command
        return "$ " + Path(program).name
    return Path(spec.model).name


def ps_model_cell(spec: InstanceSpec, facts: FlavourFacts | None, model: str) -> str:
    """The MODEL column of ``ps``: what the server says it serves, else what the spec names."""
    if facts is not None and facts.model and spec.kind != KIND_SERVE:
        return facts.model
    if spec.kind != KIND_SERVE:
        return model_cell(spec)
    return Path(model).name


def supervisor_facts(supervisor: Supervisor, snap: InstanceSnapshot) -> FlavourFacts | None:
    """What an answering instance says it is (one look, cached briefly by the supervisor)."""
    spec = supervisor.spec(snap.name)
    api_key = supervisor.secrets.get(snap.name).get("api_key")
    return facts_for(supervisor.flavours, spec, snap, api_key)


def instance_vram(snaps: list[InstanceSnapshot]) -> dict[str, int | None]:
    """VRAM bytes per running instance from NVML by pid (empty without GPUs or running instances)."""
    pids = {s.name: s.pid for s in snaps if s.pid}
    if not pids:
        return {}
    from koboldtui.gpu.nvml import read_inventory
    from koboldtui.gpu.usage import vram_by_instance

    return vram_by_instance(read_inventory(pids.values()), pids)


def vram_mib(vram: dict[str, int | None], name: str) -> int | None:
    """For ``ps --json``: MiB, or None when it holds none or NVML cannot say."""
    value = vram.get(name)
    return None if value is None else round(value / 2**20)


def vram_cell(vram: dict[str, int | None], name: str) -> str:
    """The VRAM column: '3.2G', '?' where NVML cannot say, '-' when it holds none."""
    if name not in vram:
        return "-"
    value = vram[name]
    return "?" if value is None else f"{value / 2**30:.1f}G"


def facts_cell(facts: FlavourFacts | None) -> str:
    """The SERVES column: flavour, busy/idle, slots, queue, speed — only what the server said."""
    return facts.summary() if facts is not None else "-"
