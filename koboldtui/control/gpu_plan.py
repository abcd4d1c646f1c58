"""Which GPUs a child gets, and whether its model fits, decided before the process is spawned.

``CUDA_VISIBLE_DEVICES`` is read once when CUDA starts, so the supervisor fixes it in the
child's environment. The order and the env come from ``koboldtui.gpu.priority`` (GPU
rows in the store + the NVML inventory, reconciled first); the VRAM estimate from
``koboldtui.gpu.fit`` when it is installed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from koboldtui.control.spec import InstanceSpec
from koboldtui.control.state import StartError
from koboldtui.gpu.nvml import GpuInventory, read_inventory
from koboldtui.gpu.priority import GpuPlan, GpuSelectionError, plan_gpus
from koboldtui.store.gpus import UnknownGpuError, list_gpus, reconcile
from koboldtui.store.instances import InstanceStore

GpuPlanner = Callable[[InstanceSpec, Path], GpuPlan]
FitCheck = Callable[[InstanceSpec, GpuPlan, Path], None]


def describe_plan(plan: GpuPlan) -> str:
    """For the log header: which devices the child was given."""
    if plan.cpu_only:
        return "CPU only"
    return "GPUs " + plan.visible_devices


def plan_for_spec(
    store: InstanceStore,
    spec: InstanceSpec,
    inventory: GpuInventory | None = None,
) -> GpuPlan:
    """The GPU plan of ``spec`` now: CPU, or GPUs in priority order (reconciling the store first)."""
    selection = spec.gpus if isinstance(spec.gpus, str) else tuple(spec.gpus)
    if selection == "cpu":
        return plan_gpus("cpu", [], GpuInventory(False, "CPU only", None))
    inventory = inventory if inventory is not None else read_inventory()
    if inventory.available and inventory.gpus:
        reconcile(store.conn, [(g.uuid, g.name) for g in inventory.gpus])
    return plan_gpus(selection, list_gpus(store.conn), inventory)


def check_spec_fits(spec: InstanceSpec, plan: GpuPlan, model_path: Path) -> None:
    """Raise ``StartError`` when the model at ``spec.gpu_layers`` will not fit the plan's free VRAM."""
    from koboldtui.gpu.fit import check_fit
    from koboldtui.models.metadata import GgufError, read_metadata

    try:
        meta = read_metadata(model_path)
    except (GgufError, OSError, ValueError) as exc:
        raise StartError(
            f"cannot start {spec.name!r}: cannot read the model {model_path}: {exc}"
        ) from exc
    parallel = max(1, spec.parallel)
    verdict = check_fit(
        meta,
        plan.gpus,
        spec.gpu_layers,
        spec.ctx,
        parallel,  # serve's --ctx is per slot
        spec.batch_size,
        plan.tensor_split,
    )
    if not verdict.fits:
        raise StartError(
            f"cannot start {spec.name!r}: the model does not fit in VRAM ({verdict.message}); "
            f"change it with `koboldtui instance edit {spec.name} ...`"
        )


def default_gpu_planner(
    store: InstanceStore,
    *,
    inventory_reader: Callable[[], GpuInventory] = read_inventory,
    fit_check: FitCheck | None = None,
) -> GpuPlanner:
    """The planner the supervisor uses: plan the GPUs, then refuse a model that will not fit."""
    fit = fit_check if fit_check is not None else check_spec_fits

    def planner(spec: InstanceSpec, model_path: Path) -> GpuPlan:
        try:
            plan = plan_for_spec(store, spec, None if spec.gpus == "cpu" else inventory_reader())
        except (GpuSelectionError, UnknownGpuError) as exc:
            raise StartError(f"cannot start {spec.name!r}: {exc}") from exc
        if not plan.cpu_only and spec.gpu_layers != 0:
            fit(spec, plan, model_path)
        return plan

    return planner
