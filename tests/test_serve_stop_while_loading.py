"""Stopping an instance while its model loads: the load is cancelled and the process exits at once."""

from __future__ import annotations

import asyncio
import threading

from koboldtui.config import ServeConfig
from koboldtui.engine.factory import build_engine
from koboldtui.engine.native import ModelLoadCancelled
from koboldtui.runtime import Runtime


def test_a_cancelled_load_stops_early(bundled_model):
    cancel = threading.Event()
    cancel.set()
    try:
        build_engine(ServeConfig(ctx=256, parallel=1), bundled_model, cancel=cancel)
    except ModelLoadCancelled as exc:
        assert "cancelled" in str(exc)
    else:  # pragma: no cover - the assertion below explains
        raise AssertionError("the load should have been cancelled")


async def test_shutdown_during_load_leaves_no_engine_running(bundled_model):
    runtime = Runtime(ServeConfig(ctx=256, parallel=1), bundled_model)
    runtime.start_loading()
    await asyncio.sleep(0)  # the load thread is under way
    await asyncio.wait_for(runtime.shutdown(), timeout=30)
    assert runtime.engine is None and runtime.state == "stopping"
    assert not any(t.name == "koboldtui-decode" for t in threading.enumerate())
