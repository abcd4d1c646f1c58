"""Remote instances: a real ``koboldtui serve`` on 127.0.0.1 watched (never started) through its URL.

The served instance lends to the fake Horde, so the panel's Horde start/stop/maintenance
keys are checked through the remote's own routes; when it goes away the remote is
``unreachable`` with the reason, not an error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from instance_harness import free_port, wait_for

from koboldtui.cli import main
from koboldtui.control.state import InstanceState
from koboldtui.control.supervisor import Supervisor
from koboldtui.paths import app_paths
from koboldtui.store.db import open_database
from koboldtui.store.instances import InstanceStore

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent




def test_remote_koboldtui_is_watched_steered_and_unreachable_when_gone(
    bundled_model: Path, horde, capsys: pytest.CaptureFixture[str]
) -> None:
    from koboldtui.tui.live_backend import LiveBackend

    port = free_port()
    serve = subprocess.Popen(
        [sys.executable, "-m", "koboldtui.cli", "serve", "--port", str(port), "--ctx", "512",
         "--parallel", "2", "--batch-size", "128", "--threads", "1", "--api-key", "remote-key",
         "--horde", "--horde-key", "good-key", "--horde-name", "box2-worker",
         "--horde-url", horde.url],
        cwd=REPO, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    backend = None
    try:
        url = f"http://127.0.0.1:{port}"
        assert main(["instance", "add", "box2", "--url", url, "--api-key", "remote-key"]) == 0
        capsys.readouterr()
        paths = app_paths().ensure()
        supervisor = Supervisor(paths, InstanceStore(open_database(paths.database)))
        snap = wait_for(
            lambda: (s := supervisor.snapshot("box2")).state is InstanceState.READY and s,
            120, "the remote instance to answer ready",
        )
        assert snap.kind == "remote" and snap.pid is None and snap.gpus == "remote"
        assert "gemma" in snap.model.lower()  # what the remote says it serves

        assert main(["ps", "--json"]) == 0
        row = json.loads(capsys.readouterr().out)[0]
        assert row["state"] == "ready" and row["facts"]["flavour"] == "koboldtui"
        assert row["facts"]["slots_total"] == 2

        # the panel: full status (queue, batch, Horde card) and the Horde keys through its routes
        backend = LiveBackend()
        view = next(v for v in backend.instances() if v.name == "box2")
        assert view.status is not None and view.status.engine.parallel == 2
        assert view.horde.get("worker_name") == "box2-worker"
        backend.horde_stop("box2")
        wait_for(lambda: next(v for v in backend.instances() if v.name == "box2").horde.get("state")
                 in ("stopping", "stopped"), 30, "the remote Horde worker to stop")
        backend.horde_start("box2")
        wait_for(lambda: next(v for v in backend.instances() if v.name == "box2").horde.get("worker_id"),
                 30, "the remote Horde worker to start and register")
        backend.horde_maintenance("box2", True)
        wait_for(lambda: next(v for v in backend.instances() if v.name == "box2").horde.get("state")
                 == "maintenance", 30, "the remote Horde worker to enter maintenance")
        backend.horde_maintenance("box2", False)
        wait_for(lambda: next(v for v in backend.instances() if v.name == "box2").horde.get("state")
                 != "maintenance", 30, "the remote Horde worker to leave maintenance")

        serve.terminate()
        serve.wait(60)
        gone = wait_for(
            lambda: (s := supervisor.snapshot("box2")).state is InstanceState.UNREACHABLE and s,
            10, "the remote to be unreachable",
        )
        assert f"{url} did not answer (connection refused" in gone.last_error
        assert main(["ps"]) == 0
        assert "unreachable" in capsys.readouterr().out
        # the panel's own looks are cached for a second: it says so at the next poll or so
        view = wait_for(
            lambda: (v := next(v for v in backend.instances() if v.name == "box2")).state
            == "unreachable" and v, 10, "the panel to show the remote unreachable",
        )
        assert view.status is None and "did not answer" in view.last_error
    finally:
        if backend is not None:
            backend.close(stop_instances=False)
        if serve.poll() is None:
            serve.kill()
            serve.wait(10)
