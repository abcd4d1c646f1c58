"""A failure stays recorded (FAILED, with why) until the person dismisses it: FAILED → STOPPED.

Issue 19: the panel keeps the reason in the row until `d`; here the supervisor's side.
"""

from __future__ import annotations

from koboldtui.control.registry import InstanceRegistry
from koboldtui.control.spec import InstanceSpec
from koboldtui.control.state import InstanceState
from koboldtui.control.supervisor import Supervisor
from koboldtui.paths import app_paths
from koboldtui.store.db import open_database
from koboldtui.store.instances import InstanceStore
from tests.instance_harness import free_port


def test_a_failure_before_launch_is_kept_until_dismissed_also_for_a_second_controller() -> None:
    paths = app_paths().ensure()
    store = InstanceStore(open_database(paths.database))
    InstanceRegistry(store, paths).add(InstanceSpec(
        name="ghost", port=free_port(), kind="command", command="no-such-program-19 --port {port}", restart="no"))
    sup = Supervisor(paths, store)
    snap = sup.supervise("ghost")  # a missing program: recorded as failed, with why
    assert snap.state is InstanceState.FAILED and "no-such-program-19" in (snap.last_error or "")
    other = Supervisor(paths, store)  # `koboldtui ps` in another shell sees the same
    assert other.snapshot("ghost").state is InstanceState.FAILED
    after = sup.dismiss("ghost")
    assert after.state is InstanceState.STOPPED and after.last_error is None
    assert Supervisor(paths, store).snapshot("ghost").state is InstanceState.STOPPED
    assert sup.dismiss("ghost").state is InstanceState.STOPPED  # nothing to dismiss: unchanged
