"""Horde errors and what the worker does about each, so the table in HORDE.md lives in one place.

The server answers errors as JSON ``{"message": str, "rc": str}``; ``classify`` turns
(HTTP status, rc) into an ``Action`` and ``explain`` into words a person can act on.
"""

from __future__ import annotations

import enum
import traceback


class Action(str, enum.Enum):
    """The worker's reaction to an error (the right-hand column of HORDE.md's rc table)."""

    STOP = "stop"  # fatal: stop the worker, show what to do; local serving goes on
    MAINTENANCE = "maintenance"  # keep polling slowly, show the server's message
    DROP = "drop"  # the job is gone on the server (expired/aborted): forget it, count it
    DONE = "done"  # already submitted: count the job as done
    RETRY = "retry"  # back off with jitter and try again
    SLOW_RETRY = "slow_retry"  # back off at least a minute (IP throttled by the server)


# rc -> action, from HORDE.md (server source: Haidra-Org/AI-Horde, API 2.5).
_RC_ACTIONS: dict[str, Action] = {
    "InvalidAPIKey": Action.STOP,
    "AnonForbiddenWorker": Action.STOP,
    "WrongCredentials": Action.STOP,
    "WorkerMaintenance": Action.MAINTENANCE,
    "TooManyWorkers": Action.STOP,
    "TooManySameIPs": Action.STOP,
    "UnsafeIP": Action.STOP,
    "WorkerInviteOnly": Action.STOP,
    "DeletedUser": Action.STOP,
    "WorkerFlaggedMaintenance": Action.STOP,
    "ProfaneWorkerName": Action.STOP,
    "PolymorphicNameConflict": Action.STOP,
    "InvalidPriorityUsername": Action.STOP,
    "InvalidJobID": Action.DROP,
    "AbortedGen": Action.DROP,
    "DuplicateGen": Action.DONE,
    "TooManyNewIPs": Action.SLOW_RETRY,
    "TimeoutIP": Action.SLOW_RETRY,
}

# What to tell the person, per rc: why it happened and what to do.
_RC_ADVICE: dict[str, str] = {
    "InvalidAPIKey": "the Horde rejected the API key (InvalidAPIKey): check --horde-key "
    "(or KOBOLDTUI_HORDE_KEY); get a key at https://aihorde.net/register",
    "AnonForbiddenWorker": "the anonymous key 0000000000 cannot run a worker "
    "(AnonForbiddenWorker): "
    "register at https://aihorde.net/register and pass your own key with --horde-key",
    "WrongCredentials": "the worker name belongs to another Horde user (WrongCredentials): "
    "pick another name with --horde-name",
    "WorkerMaintenance": "the Horde put this worker in maintenance (WorkerMaintenance): "
    'clear it from the panel (POST /api/koboldtui/horde/maintenance {"on": false}) '
    "or on https://aihorde.net; the worker keeps polling slowly",
    "TooManyWorkers": "this Horde account runs as many workers as it may (TooManyWorkers): "
    "stop another worker or ask the Horde moderators for more",
    "TooManySameIPs": "too many workers run from this IP address (TooManySameIPs): "
    "stop one of them or ask the Horde moderators",
    "UnsafeIP": "the Horde does not accept workers from this IP address (UnsafeIP), "
    "e.g. a VPN or proxy: run the worker from another network",
    "WorkerInviteOnly": "the Horde only accepts invited workers right now (WorkerInviteOnly): "
    "ask the Horde moderators for an invite",
    "DeletedUser": "the Horde account of this key was deleted (DeletedUser): register again",
    "WorkerFlaggedMaintenance": "a Horde moderator put this worker in maintenance "
    "(WorkerFlaggedMaintenance): ask on the AI Horde Discord",
    "ProfaneWorkerName": "the Horde refused the worker name (ProfaneWorkerName): "
    "pick another name with --horde-name",
    "PolymorphicNameConflict": "the worker name is taken by a worker of another kind "
    "(PolymorphicNameConflict): pick another name with --horde-name",
    "InvalidPriorityUsername": "a priority username is not in the form alias#id "
    "(InvalidPriorityUsername): fix the priority usernames",
    "InvalidJobID": "the Horde job expired before it was submitted (InvalidJobID): "
    "lower --horde-max-length if this happens often",
    "AbortedGen": "the Horde aborted the job because it took too long (AbortedGen): "
    "lower --horde-max-length or --horde-threads",
    "DuplicateGen": "the job was already submitted (DuplicateGen)",
    "TooManyNewIPs": "the Horde throttles new workers from this IP (TooManyNewIPs): "
    "retrying later, nothing to do",
    "TimeoutIP": "the Horde has timed out this IP address for a while (TimeoutIP): "
    "retrying later, nothing to do",
}


def classify(status: int | None, rc: str | None) -> Action:
    """The worker's action for an HTTP status and rc (status None = no answer at all)."""
    if rc and rc in _RC_ACTIONS:
        return _RC_ACTIONS[rc]
    if status is None or status == 408 or status == 429 or status >= 500:
        return Action.RETRY
    if status == 404:
        return Action.DROP
    # An unknown 4xx (a schema error, a new rc): retrying the same body will not help.
    return Action.STOP


class HordeError(Exception):
    """A Horde call failed; carries the HTTP status (None = no answer) and the server's rc."""

    def __init__(
        self,
        what: str,
        *,
        status: int | None = None,
        rc: str | None = None,
        message: str = "",
        retry_after: float | None = None,
        action: Action | None = None,
        advice: str | None = None,
    ) -> None:
        self.what = what  # e.g. "pop", "submit"
        self.status = status
        self.rc = rc
        self.server_message = message
        self.retry_after = retry_after
        self._action = action  # set for problems found here, before the Horde answered
        self.advice = advice  # our own words for such a problem (no server message to show)
        super().__init__(self.explain())

    @property
    def action(self) -> Action:
        return self._action or classify(self.status, self.rc)

    def cause(self) -> str:
        """What went wrong, in a few words and without advice (for lines that add their own)."""
        said = f": {self.server_message}" if self.server_message else ""
        if self.advice:
            return self.advice
        if self.rc:
            return f"{self.rc}{said}"
        if self.status is None:
            return f"no answer from the Horde{said}"
        if self.status == 429:
            return "HTTP 429, rate-limited"
        return f"HTTP {self.status}{said}"

    def explain(self) -> str:
        """One line a person can act on: what failed, why, what to do."""
        if self.advice:
            return self.advice
        if self.rc and self.rc in _RC_ADVICE:
            text = _RC_ADVICE[self.rc]
            if self.server_message:
                text += f" — the Horde said: {self.server_message}"
            return text
        if self.status is None:
            return (
                f"could not reach the Horde for {self.what} "
                f"({self.server_message or 'no answer'}): "
                "check the network and --horde-url; retrying with backoff"
            )
        if self.status == 429:
            return f"the Horde is rate-limiting {self.what} (HTTP 429): backing off"
        if self.status >= 500:
            return (
                f"the Horde failed on {self.what} (HTTP {self.status}"
                f"{': ' + self.server_message if self.server_message else ''}): "
                "retrying with backoff"
            )
        if self.status == 404 and not self.rc:
            return (
                f"the Horde has no such endpoint for {self.what} (HTTP 404): "
                "check --horde-url (it should end in /api, e.g. https://aihorde.net/api)"
            )
        rc = f", {self.rc}" if self.rc else ""
        return (
            f"the Horde refused {self.what} (HTTP {self.status}{rc}): "
            f"{self.server_message or 'no message'}; check the worker settings (--horde-*)"
        )


def bug_report(exc: BaseException) -> str:
    """An unexpected exception for the log: its type and where it happened, never its text.

    The text or repr of an exception may carry the API key (a UnicodeEncodeError holds
    the whole header value), so only the type name and the frames are shown.
    """
    frames = "".join(traceback.format_tb(exc.__traceback__)).rstrip()
    return f"{type(exc).__name__}\n{frames}" if frames else type(exc).__name__
