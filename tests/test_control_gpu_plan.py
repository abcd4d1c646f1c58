"""Before a child is spawned: which GPUs it gets (env), and a refusal when the model cannot fit."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_nvml import FakeGpu, FakeNvml, GiB

from koboldtui.control.gpu_plan import default_gpu_planner, plan_for_spec
from koboldtui.control.registry import InstanceRegistry
from koboldtui.control.spec import InstanceSpec
from koboldtui.control.state import StartError
from koboldtui.control.supervisor import Supervisor
from koboldtui.gpu.nvml import NvmlSession
from koboldtui.paths import AppPaths
from koboldtui.store.db import open_database
from koboldtui.store.gpus import list_gpus, set_enabled
from koboldtui.store.instances import InstanceStore

A, B = "GPU-aaaa-0", "GPU-bbbb-1"


@pytest.fixture
def store(paths: AppPaths) -> InstanceStore:
    return InstanceStore(open_database(paths.database))


def fake(free_gib: float = 20.0) -> FakeNvml:
    total = 24 * GiB
    used = int(total - free_gib * GiB)
    return FakeNvml(
        [
            FakeGpu(A, "Fake A", total, used=used, pci_bus_id="00000000:01:00.0"),
            FakeGpu(B, "Fake B", total, used=used, pci_bus_id="00000000:02:00.0"),
        ]
    )


def test_cpu_hides_every_gpu(store: InstanceStore) -> None:
    plan = plan_for_spec(store, InstanceSpec(name="c", port=1, gpus="cpu", gpu_layers=99))
    assert plan.cpu_only and plan.env() == {
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "CUDA_VISIBLE_DEVICES": "",
    }


def test_auto_reconciles_new_gpus_and_uses_them_in_priority_order(store: InstanceStore) -> None:
    inventory = NvmlSession(lambda: fake()).read()
    plan = plan_for_spec(store, InstanceSpec(name="g", port=1), inventory)
    assert [r.uuid for r in list_gpus(store.conn)] == [A, B]  # remembered for the priority screen
    assert plan.env()["CUDA_VISIBLE_DEVICES"] == f"{A},{B}"
    set_enabled(store.conn, A, False)
    assert plan_for_spec(store, InstanceSpec(name="g", port=1), inventory).visible_devices == B


def test_auto_without_nvml_runs_on_the_cpu(store: InstanceStore) -> None:
    broken = FakeNvml([])
    broken.init_error = 9  # driver not loaded
    plan = plan_for_spec(store, InstanceSpec(name="g", port=1), NvmlSession(lambda: broken).read())
    assert plan.cpu_only and plan.env()["CUDA_VISIBLE_DEVICES"] == ""


def test_a_disabled_gpu_named_explicitly_is_refused(store: InstanceStore, tmp_path: Path) -> None:
    module = fake()
    planner = default_gpu_planner(store, inventory_reader=NvmlSession(lambda: module).read)
    planner(InstanceSpec(name="g", port=1, gpus=["1"]), tmp_path / "unused.gguf")  # reconciles
    set_enabled(store.conn, B, False)
    with pytest.raises(StartError, match=r"cannot start 'g': GPU 1 \(Fake B\) is disabled"):
        planner(InstanceSpec(name="g", port=1, gpus=["1"]), tmp_path / "unused.gguf")


def test_a_model_that_does_not_fit_is_refused_before_spawning(
    paths: AppPaths, store: InstanceStore, bundled_model: Path
) -> None:
    module = fake(free_gib=0.05)
    InstanceRegistry(store, paths).add(
        InstanceSpec(name="big", port=5701, model=str(bundled_model), gpus="auto", gpu_layers=-1)
    )
    planner = default_gpu_planner(store, inventory_reader=NvmlSession(lambda: module).read)
    supervisor = Supervisor(paths, store, gpu_planner=planner)
    with pytest.raises(
        StartError, match=r"cannot start 'big': the model does not fit in VRAM \(needs ~"
    ):
        supervisor.start("big")
    assert store.launches() == [] and not (paths.log_dir / "big.log").exists()
    # with room to spare the same spec passes the check
    roomy = NvmlSession(lambda: fake(free_gib=20)).read
    plan = default_gpu_planner(store, inventory_reader=roomy)(supervisor.spec("big"), bundled_model)
    assert plan.visible_devices == f"{A},{B}"
