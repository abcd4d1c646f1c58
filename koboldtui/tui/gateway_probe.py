"""Where the box's gateway is and what it says: read for the panel in its poll worker, never on the UI thread.

The URL comes from the saved ``gateway`` instance (``koboldtui gateway enable``), else the
port a foreground ``koboldtui gateway`` saved, else 5000; the status is one GET of its
``/api/koboldtui/gateway`` with a short timeout. A gateway that does not answer is a
reason in the report, never an exception.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import ContextManager

import httpx

from koboldtui.commands.gateway import DEFAULT_GATEWAY_PORT, GATEWAY_INSTANCE, KEY_ENV, PORT_SETTING
from koboldtui.gateway.current_model import SETTING, model_choices
from koboldtui.store.instances import InstanceStore
from koboldtui.store.settings import get_setting
from koboldtui.tui.backend import GatewayReport


def read_gateway(conn: sqlite3.Connection, secrets_file: Path, client: httpx.Client,
                 timeout_s: float = 1.0, db_lock: ContextManager | None = None) -> GatewayReport:
    """One look at the gateway (blocking: call it from a worker thread); ``db_lock`` is held for the
    store reads only, never across the HTTP call."""
    with db_lock or contextlib.nullcontext():
        stored = InstanceStore(conn).find(GATEWAY_INSTANCE)
        enabled = stored is not None and stored.spec.get("kind") == "command"
        port = stored.spec.get("port") if enabled else get_setting(conn, PORT_SETTING, DEFAULT_GATEWAY_PORT)
        current = get_setting(conn, SETTING)
        choices = tuple(model_choices(conn, secrets_file))
    url = f"http://127.0.0.1:{port or DEFAULT_GATEWAY_PORT}"
    key = os.environ.get(KEY_ENV)
    status, reason = None, None
    try:
        response = client.get(f"{url}/api/koboldtui/gateway", timeout=timeout_s,
                              headers={"Authorization": f"Bearer {key}"} if key else {})
        if response.status_code in (401, 403):
            reason = f"it refused the panel ({response.status_code}): give the panel its key in {KEY_ENV}"
        elif response.status_code != 200:
            reason = f"answered {response.status_code}"
        else:
            status = response.json()
    except httpx.ConnectError:
        reason = "nothing listens there"
    except (httpx.HTTPError, ValueError) as exc:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if status is not None and isinstance(status.get("current_model"), str):
        current = status["current_model"]
    return GatewayReport(url=url, enabled=enabled, status=status, reason=reason,
                         current_model=current if isinstance(current, str) and current else None, choices=choices)
