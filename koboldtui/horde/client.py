"""An async client for the Horde's worker calls, so the worker sees dicts and HordeError only.

Every call sends ``Client-Agent``; calls that need it send ``apikey``. The key is kept
in a private attribute, never put in a message, a repr or a log line.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

import koboldtui
from koboldtui.config import DEFAULT_HORDE_URL
from koboldtui.horde.backoff import Backoff
from koboldtui.horde.errors import Action, HordeError

log = logging.getLogger(__name__)


def default_agent() -> str:
    """Who we are, honestly: ``koboldtui:<version>:<project url>`` (name:version:url)."""
    return f"koboldtui:{koboldtui.__version__}:{koboldtui.PROJECT_URL}"


class HordeClient:
    """The calls a text worker needs: pop, submit, find_user, workers, maintenance, heartbeat."""

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_HORDE_URL,
        *,
        client_agent: str | None = None,
        timeout_s: float = 30.0,
        connect_timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.client_agent = client_agent or default_agent()
        self.__api_key = api_key.strip()  # a copy-pasted key often brings a space or newline
        self._timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s)
        self._transport = transport
        self._http: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        agent = self.client_agent
        return f"HordeClient(base_url={self.base_url!r}, client_agent={agent!r}, api_key=***)"

    def _client(self) -> httpx.AsyncClient:
        # Created lazily so it binds to the event loop that uses it.
        if self._http is None or self._http.is_closed:
            self._http = httpx.AsyncClient(
                base_url=self.base_url + "/",
                timeout=self._timeout,
                headers={"Client-Agent": self.client_agent},
                transport=self._transport,
            )
        return self._http

    async def aclose(self) -> None:
        """Close the connection pool (the worker calls it when it stops)."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _call(
        self, what: str, method: str, path: str, *, json: Any = None, auth: bool = True
    ) -> Any:
        # No exception text leaves here: it can carry the key (a UnicodeEncodeError's repr
        # holds the whole header value), so every failure becomes a HordeError in our words.
        if auth and (problem := _key_problem(self.__api_key)):
            raise HordeError(what, action=Action.STOP, advice=problem)
        headers = {"apikey": self.__api_key} if auth else {}
        try:
            response = await self._client().request(
                method, path.lstrip("/"), json=json, headers=headers
            )
        except httpx.TimeoutException as exc:
            raise HordeError(what, message=f"timed out: {type(exc).__name__}") from None
        except httpx.HTTPError as exc:
            message = self._scrub(f"{type(exc).__name__}: {exc}")
            raise HordeError(what, message=message) from None
        except UnicodeError:  # the header holding the key could not be encoded
            advice = _NON_ASCII_KEY if auth else _UNENCODABLE.format(what=what)
            raise HordeError(what, action=Action.STOP, advice=advice) from None
        except Exception as exc:  # noqa: BLE001 - building or sending failed otherwise
            raise HordeError(
                what, message=f"the request could not be made ({type(exc).__name__})"
            ) from None
        if response.is_success:
            try:
                return response.json()
            except ValueError:
                raise HordeError(
                    what,
                    status=502,
                    message=f"the answer was not JSON: {self._scrub(response.text[:200])!r}",
                ) from None
        raise _error_from_response(what, response, self._scrub)

    def _scrub(self, text: str) -> str:
        """``text`` with the key blotted out, should anything ever echo it."""
        key = self.__api_key
        if len(key) >= 4:
            text = text.replace(key, "***").replace(repr(key)[1:-1], "***")
        return text

    async def pop(self, body: dict[str, Any]) -> dict[str, Any]:
        """Ask for a job (the first pop also registers the worker)."""
        return await self._call("pop", "POST", "v2/generate/text/pop", json=body)

    async def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        """Hand back one result; the answer's ``reward`` is the kudos for it."""
        return await self._call("submit", "POST", "v2/generate/text/submit", json=body)

    async def submit_until(
        self,
        body: dict[str, Any],
        deadline: float,
        *,
        clock: Callable[[], float],
        wait: Callable[[float], Awaitable[Any]],
        give_up: Callable[[], bool],
        backoff: Backoff,
        on_retry: Callable[[str, float], None] | None = None,
    ) -> SubmitOutcome:
        """Submit, retrying 429/5xx/network errors with backoff until ``deadline`` (the job's ttl).

        A retry waits ``min(backoff, time left)`` and tries once more, so a result is given
        up only once its ttl has really run out (or on a forced stop). ``on_retry(words,
        delay)`` hears of every failed try before the wait.

        Never raises HordeError: the outcome says whether the Horde took it (``done``,
        also for DuplicateGen), dropped it (expired, aborted, out of time) or refused us
        for good (``fatal``: e.g. the key stopped working).
        """
        tries = 0
        while True:
            tries += 1
            try:
                data = await self.submit(body)
            except HordeError as err:
                action = err.action
                if action is Action.DONE:  # DuplicateGen: it got there already
                    return SubmitOutcome("done")
                if action is Action.DROP:
                    return SubmitOutcome("dropped", error=err.explain())
                if action is Action.STOP:
                    return SubmitOutcome("fatal", error=err.explain())
                left = deadline - clock()
                if give_up() or left <= 0:
                    why = "the worker was stopped with force" if give_up() else "it expired (its ttl ran out)"
                    return SubmitOutcome(
                        "dropped",
                        error=f"given up after {tries} tries to submit it: {why}; the last try got "
                        f"{err.cause()}",
                    )
                delay = backoff.next_delay()
                if err.retry_after:
                    delay = max(delay, err.retry_after)
                delay = min(delay, left)
                if on_retry is not None:
                    on_retry(err.cause(), delay)
                await wait(delay)
                continue
            reward = data.get("reward") if isinstance(data, dict) else None
            return SubmitOutcome(
                "done", reward=float(reward) if isinstance(reward, (int, float)) else 0.0
            )

    async def find_user(self) -> dict[str, Any]:
        """The key's user: ``username``, ``kudos``, ``worker_ids``."""
        return await self._call("find_user", "GET", "v2/find_user")

    async def worker_by_id(self, worker_id: str) -> dict[str, Any]:
        """Details of one worker: ``maintenance_mode``, ``kudos_rewards``, ``uptime``..."""
        return await self._call("worker details", "GET", f"v2/workers/{worker_id}")

    async def worker_by_name(self, name: str) -> dict[str, Any]:
        """Details of the worker with this name (404 before its first pop)."""
        return await self._call("worker details", "GET", f"v2/workers/name/{quote(name, safe='')}")

    async def set_maintenance(self, worker_id: str, on: bool, message: str = "") -> dict[str, Any]:
        """Put the worker in or out of maintenance (owner only)."""
        body: dict[str, Any] = {"maintenance": bool(on)}
        if message:
            body["maintenance_msg"] = message
        return await self._call("maintenance", "PUT", f"v2/workers/{worker_id}", json=body)

    async def heartbeat(self) -> dict[str, Any]:
        """Whether the Horde is up (``message``: OK | OVERLOADED | DOWN); needs no key."""
        return await self._call("heartbeat", "GET", "v2/status/heartbeat", auth=False)


@dataclass(frozen=True)
class SubmitOutcome:
    """How a submit ended: ``done`` (with its kudos ``reward``), ``dropped`` or ``fatal``."""

    kind: str
    reward: float = 0.0
    error: str | None = None


_NON_ASCII_KEY = (
    "the Horde API key contains characters that are not plain ASCII (a stray space or quote "
    "from copy-paste?): re-enter it (--horde-key or KOBOLDTUI_HORDE_KEY)"
)
_UNENCODABLE = (
    "the {what} request could not be encoded (a setting with characters that are not plain "
    "ASCII?): check the --horde-* settings"
)
_CONTROL_CHAR_KEY = (
    "the Horde API key contains control characters (a stray tab or line break from "
    "copy-paste?): re-enter it (--horde-key or KOBOLDTUI_HORDE_KEY)"
)


def _key_problem(key: str) -> str | None:
    """Why ``key`` cannot go in an HTTP header (None = it can); never quotes the key."""
    if not key.isascii():
        return _NON_ASCII_KEY
    if not key.isprintable():
        return _CONTROL_CHAR_KEY
    return None


def _error_from_response(
    what: str, response: httpx.Response, scrub: Callable[[str], str]
) -> HordeError:
    rc: str | None = None
    message = ""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        rc = data.get("rc") if isinstance(data.get("rc"), str) else None
        message = str(data.get("message") or "")
        errors = data.get("errors")
        if errors:  # schema errors: 400 with ``errors`` and no rc
            message = f"{message} {errors}".strip()
    elif response.text:
        message = response.text[:200]
    retry_after: float | None = None
    header = response.headers.get("Retry-After")
    if header:
        try:
            retry_after = float(header)
        except ValueError:
            retry_after = None
    return HordeError(
        what, status=response.status_code, rc=rc, message=scrub(message), retry_after=retry_after
    )
