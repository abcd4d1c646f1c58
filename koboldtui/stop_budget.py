"""How long a stopping instance may take, phase by phase, and the grace its supervisor allows.

One place for both sides, so the supervisor's SIGKILL always comes after the instance's
own drain has had its full time (a kill mid-drain is what lost Horde jobs and cut streams).

From the first SIGTERM/SIGINT, in the instance:
- new local requests get 503 and the Horde worker pops nothing more, at once;
- local requests in flight may finish for ``LOCAL_DRAIN_S``; what still runs then is
  aborted and ends with finish reason ``abort`` (never a 500 or a cut stream);
- Horde jobs in hand may finish and be submitted until ``HORDE_FINISH_S`` after the
  signal; what is left is submitted ``faulted``, which may take ``HORDE_FAULT_S``;
- then the model is freed (``CLOSE_S``).
"""

from __future__ import annotations

LOCAL_DRAIN_S = 10.0
ABORT_S = 3.0  # an aborted request ends at the next decode step; this is its ceiling
HORDE_FINISH_S = 25.0
HORDE_FAULT_S = 5.0
CLOSE_S = 3.0
MARGIN_S = 7.0  # process start-up/teardown and a loaded machine


def instance_stop_s(horde: bool, local_drain_s: float = LOCAL_DRAIN_S) -> float:
    """The longest a well-behaved instance takes from SIGTERM to exit."""
    local = local_drain_s + ABORT_S
    horde_s = HORDE_FINISH_S + HORDE_FAULT_S if horde else 0.0
    return max(local, horde_s) + CLOSE_S


def supervisor_grace_s(horde: bool) -> float:
    """How long the supervisor waits after SIGTERM before SIGKILL: always past the drain."""
    return instance_stop_s(horde) + MARGIN_S
