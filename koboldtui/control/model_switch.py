"""Switch an instance to another model: check first, and roll back if the new one fails.

A switch stops a working instance; a model that cannot load must not strand it. So the
new file is checked before anything stops (readable GGUF with weights, fits the RAM on the
CPU and the VRAM of its GPU plan), and when it still fails to load, the instance goes
back to the model it had (as KoboldCpp's admin reload falls back to the last good
config) and the error says so. The panel, the CLI and the gateway all switch through here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from koboldtui.control.gpu_plan import check_spec_fits, plan_for_spec
from koboldtui.control.state import InstanceState, StartError
from koboldtui.models.bundled import BUNDLED_MODEL_ALIAS, resolve_model_path
from koboldtui.models.model_check import model_problem

Progress = Callable[[str, float], None]
LOADING_STEPS = {"starting": 0.45, "loading": 0.6, "ready": 1.0}


class ModelSwitchError(StartError):
    """The switch was refused before anything stopped, or failed and was rolled back; says which."""

    def __init__(self, message: str, *, rolled_back: bool = False) -> None:
        super().__init__(message)
        self.rolled_back = rolled_back


@dataclass(frozen=True)
class SwitchOutcome:
    """What a switch did: the model now saved for the instance, and whether it runs."""

    model: str
    running: bool


def short(model: str) -> str:
    """The file name a person knows a model by ('bundled' stays 'bundled')."""
    return model if model == BUNDLED_MODEL_ALIAS else Path(model).name


def switch_problem(supervisor: Any, name: str, model: str, *, ram_bytes: int | None = None) -> str | None:
    """Why ``model`` cannot replace ``name``'s model (nothing is stopped to find out), or None."""
    spec = supervisor.spec(name)
    if spec.is_remote:
        return f"{name} is remote: its model is chosen on its own machine"
    if spec.kind == "command" and "{model}" not in spec.command:
        return f"{name}'s command line names its own model: change the command instead"
    try:
        path = resolve_model_path(model, supervisor.paths)
    except (OSError, ValueError) as exc:
        return str(exc)
    trial = replace(spec, model=model)
    try:
        plan = plan_for_spec(supervisor.store, trial)
    except Exception as exc:  # noqa: BLE001 - a GPU set that cannot be planned: say so, stop nothing
        return f"its GPUs cannot be planned: {exc}"
    cpu_only = plan.cpu_only or spec.gpu_layers == 0
    problem = model_problem(path, cpu_only=cpu_only, ram_bytes=ram_bytes)
    if problem:
        return problem
    if not cpu_only:
        try:
            check_spec_fits(trial, plan, path)
        except StartError as exc:
            return str(exc).replace(f"cannot start {name!r}: ", "")
    return None


def switch_model(
    supervisor: Any,
    registry: Any,
    name: str,
    model: str,
    progress: Progress,
    *,
    ram_bytes: int | None = None,
    timeout_s: float = 900.0,
) -> SwitchOutcome:
    """Check ``model``, stop ``name``, start it on ``model``; on failure go back to the old model.

    Raises ``ModelSwitchError`` when refused (nothing stopped) or when the new model failed
    (``rolled_back`` True: the old model is saved again and, if it ran before, running).
    """
    old = registry.get(name).model
    progress(f"checking {short(model)}", 0.05)
    problem = switch_problem(supervisor, name, model, ram_bytes=ram_bytes)
    if problem:
        raise ModelSwitchError(f"{name} keeps {short(old)}: {short(model)} was refused, {problem}")
    was_running = supervisor.snapshot(name).state in (InstanceState.READY, InstanceState.LOADING,
                                                        InstanceState.STARTING)
    progress(f"stopping {name}", 0.1)
    supervisor.stop(name)
    progress(f"saving the new model {short(model)}", 0.3)
    registry.edit(name, {"model": model})
    progress(f"starting {name}", 0.4)
    try:
        supervisor.start(name, wait=True, timeout_s=timeout_s,
                         progress=lambda snap: progress(snap.state.value, LOADING_STEPS.get(snap.state.value, 0.5)))
    except StartError as exc:
        reason = str(exc)
        progress(f"{short(model)} did not load: rolling back to {short(old)}", 0.5)
        supervisor.stop(name)  # drops a crash-restart the failure scheduled
        registry.edit(name, {"model": old})
        if not was_running:
            raise ModelSwitchError(f"{name} did not load {short(model)} ({reason}); rolled back to "
                                   f"{short(old)}, saved again (it was not running, so it stays stopped)",
                                   rolled_back=True) from exc
        try:
            supervisor.start(name, wait=True, timeout_s=timeout_s)
        except StartError as again:
            raise ModelSwitchError(f"{name} did not load {short(model)} ({reason}); rolled back to "
                                   f"{short(old)}, which did not start either: {again}",
                                   rolled_back=True) from again
        raise ModelSwitchError(f"{name} did not load {short(model)} ({reason}); rolled back to "
                               f"{short(old)}, which is running again", rolled_back=True) from exc
    progress("ready", 1.0)
    return SwitchOutcome(model, True)
