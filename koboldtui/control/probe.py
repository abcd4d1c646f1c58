"""Short HTTP looks at an instance: is it ready (``/health``), and who is it (the status route).

Timeouts are short because the supervisor polls several instances in a row; any network
failure is an answer ("down"), never an exception for the caller to handle.
"""

from __future__ import annotations

import enum
import threading
from typing import Any

import httpx

HEALTH_PATH = "/health"
STATUS_PATH = "/api/koboldtui/status"


class Health(str, enum.Enum):
    """What ``/health`` said: ready (200 ok), loading (503), down (no answer), or odd."""

    READY = "ready"
    LOADING = "loading"
    FAILED = "failed"  # 503 with status "failed": the model could not be loaded
    DOWN = "down"
    ERROR = "error"


_client: httpx.Client | None = None
_client_lock = threading.Lock()


def _http() -> httpx.Client:
    """One shared client (thread-safe): a new one per poll costs an SSL context and a
    connection each time, which was most of the panel's idle CPU."""
    global _client
    with _client_lock:
        if _client is None:
            _client = httpx.Client(trust_env=False)
        return _client


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def probe_health(base_url: str, *, api_key: str | None = None, timeout_s: float = 1.0) -> Health:
    """One GET of ``/health``, mapped to a ``Health``."""
    return probe_health_detail(base_url, api_key=api_key, timeout_s=timeout_s)[0]


def probe_health_detail(
    base_url: str, *, api_key: str | None = None, timeout_s: float = 1.0
) -> tuple[Health, str | None]:
    """``/health`` as (Health, the error the instance reported when it failed to load)."""
    try:
        response = _http().get(base_url + HEALTH_PATH, headers=_headers(api_key), timeout=timeout_s)
    except httpx.HTTPError:
        return Health.DOWN, None
    try:
        body = response.json()
    except ValueError:
        body = None
    status = body.get("status") if isinstance(body, dict) else None
    if response.status_code == 200:
        return (Health.READY if status == "ok" else Health.ERROR), None
    if response.status_code == 503:
        if status == "failed":
            error = body.get("error") if isinstance(body, dict) else None
            return Health.FAILED, str(error) if error else None
        if status == "wedged":  # the decode thread is stuck: not an answer the watchdog trusts
            return Health.ERROR, None
        return Health.LOADING, None
    return Health.ERROR, None


def fetch_status(
    base_url: str, *, api_key: str | None = None, timeout_s: float = 2.0
) -> dict[str, Any] | None:
    """The instance's status JSON (``koboldtui.status.InstanceStatus.to_dict()``), or None."""
    try:
        response = _http().get(base_url + STATUS_PATH, headers=_headers(api_key), timeout=timeout_s)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) and isinstance(data.get("instance"), dict) else None


def instance_identity(status: dict[str, Any]) -> tuple[int | None, str | None]:
    """(pid, launch_token) from a status JSON, as the instance reports them."""
    info = status.get("instance") or {}
    pid = info.get("pid")
    token = info.get("launch_token")
    return (int(pid) if isinstance(pid, int) else None, token if isinstance(token, str) else None)
