"""Short HTTP looks at an instance: is it ready (``/health``), and who is it (the status route).

Timeouts are short because the supervisor polls several instances in a row; any network
failure is an answer ("down"), never an exception for the caller to handle.
"""

from __future__ import annotations

import enum
from typing import Any

import httpx

HEALTH_PATH = "/health"
STATUS_PATH = "/api/koboldtui/status"


class Health(str, enum.Enum):
    """What ``/health`` said: ready (200 ok), loading (503), down (no answer), or odd."""

    READY = "ready"
    LOADING = "loading"
    DOWN = "down"
    ERROR = "error"


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def probe_health(base_url: str, *, api_key: str | None = None, timeout_s: float = 1.0) -> Health:
    """One GET of ``/health``, mapped to a ``Health``."""
    try:
        response = httpx.get(base_url + HEALTH_PATH, headers=_headers(api_key), timeout=timeout_s)
    except httpx.HTTPError:
        return Health.DOWN
    if response.status_code == 200:
        try:
            body = response.json()
        except ValueError:
            return Health.ERROR
        return Health.READY if isinstance(body, dict) and body.get("status") == "ok" else Health.ERROR
    if response.status_code == 503:
        return Health.LOADING
    return Health.ERROR


def fetch_status(
    base_url: str, *, api_key: str | None = None, timeout_s: float = 2.0
) -> dict[str, Any] | None:
    """The instance's status JSON (``koboldtui.status.InstanceStatus.to_dict()``), or None."""
    try:
        response = httpx.get(base_url + STATUS_PATH, headers=_headers(api_key), timeout=timeout_s)
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
