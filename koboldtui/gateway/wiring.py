"""Build a gateway from the box's data dir: the store, the secrets, a Supervisor, one HTTP client."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from koboldtui.control.secrets import InstanceSecrets
from koboldtui.control.supervisor import Supervisor
from koboldtui.gateway.backends import BackendTable
from koboldtui.gateway.current_model import CurrentModel
from koboldtui.gateway.on_demand import OnDemand
from koboldtui.gateway.service import Gateway, GatewayOptions
from koboldtui.gateway.watcher import Watcher
from koboldtui.paths import AppPaths
from koboldtui.store.db import open_database
from koboldtui.store.instances import InstanceStore


def upstream_client() -> httpx.AsyncClient:
    """No read timeout (a long generation streams for minutes); short connect; no proxies from the env."""
    return httpx.AsyncClient(timeout=httpx.Timeout(connect=5.0, read=None, write=60.0, pool=None),
                             limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
                             trust_env=False)


def make_gateway(paths: AppPaths, *, supervisor: Supervisor | None = None, wait_s: float = 120.0,
                 watch_interval_s: float = 2.0, clock: Callable[[], float] = time.monotonic,
                 options: GatewayOptions | None = None) -> Gateway:
    """A gateway over the instances saved in ``paths``; ``supervisor`` and ``clock`` for tests."""
    paths = paths.ensure()
    store = InstanceStore(open_database(paths.database))
    supervisor = supervisor or Supervisor(paths, store)
    table = BackendTable(store, InstanceSecrets(paths.secrets_file), clock=clock)
    table.refresh()
    client = upstream_client()
    watcher = Watcher(table, client, interval_s=watch_interval_s, clock=clock)
    on_demand = OnDemand(supervisor, table, wait_s=wait_s, clock=clock)
    current = CurrentModel(open_database(paths.database))
    return Gateway(table, watcher, on_demand, current, client, options=options, clock=clock)
