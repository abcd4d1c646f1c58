"""``koboldtui horde ...`` against a real instance whose worker talks to the fake Horde."""

from __future__ import annotations

import time

import httpx
import pytest

from koboldtui.cli import main
from koboldtui.config import HordeSettings, ServeConfig
from tests.instance_harness import running_instance

pytestmark = pytest.mark.slow


@pytest.fixture
def instance(horde, bundled_model):
    settings = HordeSettings(enabled=True, api_key="good-key", worker_name="cli-test-worker",
                             url=horde.url, window_s=20.0)
    config = ServeConfig(ctx=256, parallel=2, batch_size=64, horde=settings, api_key="local-key")
    with running_instance(config, bundled_model) as (base, runtime):
        yield base, runtime


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_status_countdown_maintenance_and_stop_from_the_shell(instance, horde, capsys):
    base, runtime = instance
    target = ["--url", base, "--api-key", "local-key"]
    wait_for(lambda: runtime.horde_worker.worker_id is not None)  # registered by its first pop

    assert main(["horde", "status", *target]) == 0
    out = capsys.readouterr().out
    assert "state" in out and "cli-test-worker" in out and "priority   open" in out

    httpx.post(base + "/api/v1/generate", headers={"Authorization": "Bearer local-key"},
               json={"prompt": "Hi", "max_length": 2})  # a local request shuts the window
    assert main(["horde", "status", *target]) == 0
    assert "Horde waits" in capsys.readouterr().out

    assert main(["horde", "maintenance", "on", "--message", "upgrading", *target]) == 0
    capsys.readouterr()
    puts = [r for r in horde.requests(method="PUT") if "/v2/workers/" in r.path]
    assert puts and puts[-1].json == {"maintenance": True, "maintenance_msg": "upgrading"}

    assert main(["horde", "stop", *target]) == 0
    assert "stop" in capsys.readouterr().out  # state stopping or stopped


def test_wrong_local_key_is_a_clear_error(instance, capsys):
    base, _ = instance
    assert main(["horde", "status", "--url", base, "--api-key", "wrong"]) == 1
    assert "API key" in capsys.readouterr().err


def test_a_saved_instance_is_found_by_name_with_its_key(bundled_model, capsys):
    import argparse

    from koboldtui.commands.horde import resolve_target

    assert main(["instance", "add", "worker", "--port", "5377", "--api-key", "kk"]) == 0
    capsys.readouterr()
    args = argparse.Namespace(name="worker", url=None, api_key=None)
    assert resolve_target(args) == ("http://127.0.0.1:5377", "kk")
    assert main(["horde", "status", "worker"]) == 1  # not running: says what to do
    assert "is the instance running" in capsys.readouterr().err
