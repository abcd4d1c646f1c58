"""Which requests belong to whom, so a client's ``genkey`` only ever selects its own requests.

A request is identified by its handle (and the engine's own unique id, ``KTUI…``), never by
the ``genkey`` a client chose: clients that pick short keys collide for real. The
*requester* is the client's address plus the ``genkey`` it sent (``""`` when it sent none):
``/api/extra/abort`` and ``/api/extra/generate/check`` look only among the requests that
the same address sent with the same key. Clients behind one address (several scripts on
this machine, or everyone behind a reverse proxy) that choose the same key are one
requester to us: pick unique keys (KoboldAI Lite and SillyTavern do).

KoboldCpp's rules without a key stay: abort and check work for the single request in
progress and "not when multiple requests are in queue" — here, when the sender's address
has exactly one request in flight.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from koboldtui.engine.interface import GenerationHandle

KEEP_RECENT = 256  # finished requests remembered for a late check / last_logprobs


@dataclass(frozen=True)
class Requester:
    """Who sent a request: the client's address and the ``genkey`` it chose ("" = none)."""

    address: str
    genkey: str = ""


class RequestBook:
    """Live and recent requests by requester; finished ones are forgotten oldest first."""

    def __init__(self, keep: int = KEEP_RECENT) -> None:
        self._keep = keep
        self._entries: collections.deque[tuple[Requester, GenerationHandle]] = collections.deque()

    def add(self, requester: Requester, handle: GenerationHandle) -> None:
        self._entries.append((requester, handle))
        while len(self._entries) > self._keep:
            # forget the oldest finished one; live ones stay until they end
            for i, (_, old) in enumerate(self._entries):
                if old.done():
                    del self._entries[i]
                    break
            else:
                break

    def _of(self, requester: Requester) -> list[GenerationHandle]:
        """The requester's handles, newest first."""
        return [h for r, h in reversed(self._entries) if r == requester]

    def live_of_address(self, address: str) -> list[GenerationHandle]:
        """Requests in flight from one address (any key), newest first."""
        return [h for r, h in reversed(self._entries) if r.address == address and not h.done()]

    def to_abort(self, requester: Requester) -> GenerationHandle | None:
        """With a key: the requester's newest request still in flight. Without: the address's
        one request in flight, or None when it has several (KoboldCpp: "does not work when
        multiple requests are in queue")."""
        if requester.genkey:
            return next((h for h in self._of(requester) if not h.done()), None)
        live = self.live_of_address(requester.address)
        return live[0] if len(live) == 1 else None

    def to_show(self, requester: Requester) -> GenerationHandle | None:
        """The request whose text ``generate/check`` (and ``last_logprobs``) answer with: with a
        key, the requester's newest in flight, else its newest finished. Without a key,
        KoboldCpp's "the currently ongoing generation": the address's one request in flight,
        if it was sent without a key (never a guess between two, never a finished one)."""
        if not requester.genkey:
            live = self.live_of_address(requester.address)
            if len(live) != 1:
                return None
            return live[0] if live[0] in self._of(requester) else None
        mine = self._of(requester)
        return next((h for h in mine if not h.done()), mine[0] if mine else None)
