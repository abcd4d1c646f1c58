"""What kind of server answers on a port, and what it says about itself: model, busy, queue, speed.

Each flavour is recognised by a route only it answers that way (KoboldCpp's
``/api/extra/version``, llama-server's ``/props``, koboldtui's status route, an A1111-style
``/sdapi/v1/sd-models``, an OpenAI-compatible ``/v1/models``), tried in that order because
the richer servers also answer the plainer routes. Then only what the server exposes is
read; a fact it does not expose stays ``None`` (shown as "-"), never guessed.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from koboldtui.control.probe import STATUS_PATH, _headers, _http

KOBOLDTUI, KOBOLDCPP, LLAMA_SERVER, A1111, OPENAI, UNKNOWN = (
    "koboldtui",
    "koboldcpp",
    "llama-server",
    "a1111",
    "openai",
    "unknown",
)


_KOBOLDTUI_NOT_READY = ("loading", "starting", "stopping", "failed")


class Unreachable(Exception):
    """The server did not answer at all (refused, timed out); the message says which."""


@dataclass(frozen=True)
class FlavourFacts:
    """What a server told us about itself; ``None`` = it does not expose that (not zero)."""

    flavour: str
    model: str | None = None
    version: str | None = None
    busy: bool | None = None
    queue: int | None = None
    slots_busy: int | None = None
    slots_total: int | None = None
    tokens_per_s: float | None = None
    images_done: int | None = None
    status: dict[str, Any] | None = None  # a koboldtui server's full status JSON

    def summary(self) -> str:
        """One line for ``ps`` and the panel: only the facts the server gave."""
        parts = [self.flavour + (f" {self.version}" if self.version else "")]
        if self.busy is not None:
            parts.append("busy" if self.busy else "idle")
        if self.slots_total is not None:
            parts.append(f"slots {self.slots_busy if self.slots_busy is not None else '?'}/{self.slots_total}")
        if self.queue is not None:
            parts.append(f"queue {self.queue}")
        if self.tokens_per_s is not None:
            parts.append(f"{self.tokens_per_s:.1f} tok/s")
        if self.images_done is not None:
            parts.append(f"{self.images_done} images")
        return " · ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """For ``ps --json`` (the koboldtui status JSON is left out: it has its own route)."""
        data = asdict(self)
        data.pop("status", None)
        return data


class _Reader:
    """GETs against one server with one timeout; a refused connection raises ``Unreachable``."""

    def __init__(self, base_url: str, api_key: str | None, timeout_s: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = _headers(api_key)
        self.timeout_s = timeout_s

    def get(self, path: str) -> httpx.Response:
        try:
            return _http().get(self.base_url + path, headers=self.headers, timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            raise Unreachable(f"{self.base_url} did not answer ({_why(exc)})") from exc

    def json(self, path: str) -> Any:
        """The JSON body of a 200 answer, else None."""
        response = self.get(path)
        if response.status_code != 200:
            return None
        try:
            return response.json()
        except ValueError:
            return None

    def json_any(self, path: str) -> Any:
        """The JSON body whatever the status code (a 503 "loading" says something too)."""
        try:
            return self.get(path).json()
        except ValueError:
            return None

    def text(self, path: str) -> str | None:
        response = self.get(path)
        return response.text if response.status_code == 200 else None


def _why(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or host unreachable"
    return type(exc).__name__


def detect_flavour(reader: _Reader) -> str:
    """Which server this is, from the first route that answers the way only that flavour does."""
    response = reader.get(STATUS_PATH)
    if response.status_code == 200:
        try:
            status = response.json()
        except ValueError:
            status = None
        if isinstance(status, dict) and isinstance(status.get("instance"), dict):
            return KOBOLDTUI
    elif response.status_code == 503:  # a koboldtui still loading (it also answers KoboldCpp's routes)
        health = reader.json_any("/health")
        if isinstance(health, dict) and health.get("status") in _KOBOLDTUI_NOT_READY:
            return KOBOLDTUI
    version = reader.json("/api/extra/version")
    if isinstance(version, dict) and str(version.get("result", "")).lower() == "koboldcpp":
        return KOBOLDCPP
    props = reader.json("/props")
    if isinstance(props, dict) and ("total_slots" in props or "default_generation_settings" in props):
        return LLAMA_SERVER
    checkpoints = reader.json("/sdapi/v1/sd-models")
    if isinstance(checkpoints, list) and all(
        isinstance(c, dict) and ("title" in c or "model_name" in c) for c in checkpoints
    ):
        return A1111
    models = reader.json("/v1/models")
    if isinstance(models, dict) and isinstance(models.get("data"), list):
        return OPENAI
    return UNKNOWN


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _koboldtui(reader: _Reader) -> FlavourFacts:
    status = reader.json(STATUS_PATH)
    if not isinstance(status, dict):
        return FlavourFacts(KOBOLDTUI)
    totals = status.get("totals") or {}
    busy = _int(status.get("slots_busy"))
    return FlavourFacts(
        KOBOLDTUI,
        model=(status.get("model") or {}).get("name"),
        version=(status.get("instance") or {}).get("version"),
        busy=None if busy is None else busy > 0,
        queue=_int(status.get("queue_depth")),
        slots_busy=busy,
        slots_total=_int(status.get("parallel")),
        tokens_per_s=_float(totals.get("last_tokens_per_s")),
        status=status,
    )


def _koboldcpp(reader: _Reader) -> FlavourFacts:
    version = reader.json("/api/extra/version") or {}
    model = reader.json("/api/v1/model") or {}
    perf = reader.json("/api/extra/perf") or {}
    name = model.get("result") if isinstance(model, dict) else None
    if isinstance(name, str) and name.startswith("koboldcpp/"):
        name = name[len("koboldcpp/"):]
    idle = _int(perf.get("idle"))
    makes_images = bool(version.get("txt2img"))
    return FlavourFacts(
        KOBOLDCPP,
        model=name if name and name != "inactive" else None,
        version=version.get("version"),
        busy=None if idle is None else idle == 0,
        queue=_int(perf.get("queue")),
        tokens_per_s=_float(perf.get("last_eval_speed")) if version.get("llm", True) else None,
        images_done=_int(perf.get("total_img_gens")) if makes_images else None,
    )


_METRIC = re.compile(r"^(llamacpp:[a-z_]+)(?:\{[^}]*\})?\s+([-+0-9.eE]+|nan|NaN)\s*$")


def _metrics(text: str | None) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in (text or "").splitlines():
        match = _METRIC.match(line.strip())
        if match:
            try:
                values[match.group(1)] = float(match.group(2))
            except ValueError:
                continue
    return values


def _llama_server(reader: _Reader) -> FlavourFacts:
    props = reader.json("/props") or {}
    path = props.get("model_alias") or props.get("model_path")
    slots = reader.json("/slots")  # 501 when started with --no-slots
    busy_slots = None
    if isinstance(slots, list):
        busy_slots = sum(
            1
            for s in slots
            if isinstance(s, dict) and (s.get("is_processing") or s.get("state", 0) != 0)
        )
    metrics = _metrics(reader.text("/metrics"))  # only with --metrics
    total = _int(props.get("total_slots")) or (len(slots) if isinstance(slots, list) else None)
    processing = metrics.get("llamacpp:requests_processing")
    busy = busy_slots > 0 if busy_slots is not None else (
        processing > 0 if processing is not None else None
    )
    deferred = metrics.get("llamacpp:requests_deferred")
    speed = metrics.get("llamacpp:predicted_tokens_seconds")
    return FlavourFacts(
        LLAMA_SERVER,
        model=str(path).rsplit("/", 1)[-1] if path else None,
        version=props.get("build_info"),
        busy=busy,
        queue=None if deferred is None else int(deferred),
        slots_busy=busy_slots,
        slots_total=total,
        tokens_per_s=speed,
    )


def _a1111(reader: _Reader) -> FlavourFacts:
    options = reader.json("/sdapi/v1/options") or {}
    progress = reader.json("/sdapi/v1/progress") or {}
    state = progress.get("state") or {} if isinstance(progress, dict) else {}
    jobs = _int(state.get("job_count")) if isinstance(state, dict) else None
    done = _float(progress.get("progress")) if isinstance(progress, dict) else None
    busy = None if jobs is None and done is None else bool((jobs or 0) > 0 or (done or 0) > 0)
    return FlavourFacts(
        A1111,
        model=options.get("sd_model_checkpoint") if isinstance(options, dict) else None,
        busy=busy,
    )


def _openai(reader: _Reader) -> FlavourFacts:
    models = reader.json("/v1/models") or {}
    data = models.get("data", []) if isinstance(models, dict) else []
    ids = [str(m["id"]) for m in data if isinstance(m, dict) and m.get("id")]
    return FlavourFacts(OPENAI, model=", ".join(ids) if ids else None)


def _check_answers_at_all(reader: _Reader) -> None:
    """An unknown server counts only if ``/health`` or ``/`` says OK; a wall of 404s is not one."""
    codes = []
    for path in ("/health", "/"):
        code = reader.get(path).status_code
        if code < 400:
            return
        codes.append(code)
    if any(code in (401, 403) for code in codes):
        raise Unreachable(
            f"{reader.base_url} refused us (HTTP {codes[0]}): check the instance's --api-key"
        )
    raise Unreachable(
        f"{reader.base_url} answers, but not like a model server (HTTP {codes[0]} on /health "
        "and /): check the host and port"
    )


_READERS = {
    KOBOLDTUI: _koboldtui,
    KOBOLDCPP: _koboldcpp,
    LLAMA_SERVER: _llama_server,
    A1111: _a1111,
    OPENAI: _openai,
}


def read_facts(
    base_url: str,
    *,
    flavour: str | None = None,
    api_key: str | None = None,
    timeout_s: float = 1.5,
) -> FlavourFacts:
    """Detect the flavour (unless already known) and read its facts; raises ``Unreachable``."""
    reader = _Reader(base_url, api_key, timeout_s)
    flavour = flavour or detect_flavour(reader)
    read = _READERS.get(flavour)
    if read is None:
        _check_answers_at_all(reader)
        return FlavourFacts(UNKNOWN)
    try:
        return read(reader)
    except (AttributeError, TypeError, ValueError, KeyError):
        return FlavourFacts(flavour)  # an answer of an unexpected shape: nothing we can vouch for
