"""Every request in every instance, one stable row each; finished rows fade, then go.

Rows are keyed by instance and genkey so a request keeps its row (and the cursor) as
its state and token count change; a finished request stays dimmed for a while so the
person sees how it ended. A request that vanishes without a final state is "stopped"
when its instance stopped, else "ended" (never claimed "done"). ``filter_text`` (the
``/`` key) narrows the rows to those whose id, origin, instance or state match.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from textual.binding import BindingType

from koboldtui.tui import gauges
from koboldtui.tui.backend import FINISHED_REQUEST_STATES, InstanceView
from koboldtui.tui.keys import panel_bindings
from koboldtui.tui.widgets.keyed_table import KeyedTable

FADE_AFTER_S = 10.0


def row_key(instance: str, genkey: str) -> str:
    return f"{instance}\x1f{genkey}"


def split_key(key: str) -> tuple[str, str]:
    instance, _, genkey = key.partition("\x1f")
    return instance, genkey


class QueueTable(KeyedTable):
    """All requests across instances; ``a`` aborts the selected one."""

    BINDINGS: ClassVar[list[BindingType]] = panel_bindings("queue")

    BORDER_TITLE = "Queue"
    COLUMNS = (
        ("id", "id"),
        ("origin", "origin"),
        ("instance", "instance"),
        ("state", "state"),
        ("tokens", "tokens"),
        ("cached", "cached"),
        ("tps", "tok/s"),
        ("age", "age"),
    )

    def __init__(self, fade_after_s: float = FADE_AFTER_S, **kwargs) -> None:
        super().__init__(**kwargs)
        self.fade_after_s = fade_after_s
        self._finished_at: dict[str, float] = {}
        self._last: dict[str, tuple[str, str, str, str, int, int, float, float]] = {}
        # Rows that have faded out: the instance keeps finished requests in its status for a
        # minute, and without this they would come back (at the bottom) on the next poll.
        self._gone: set[str] = set()
        self.filter_text = ""
        self._cached: dict[str, int] = {}

    def show(self, instances: Iterable[InstanceView], now: float) -> None:
        """Sync with the latest statuses; rows gone from a status count as finished."""
        seen: dict[str, tuple[str, str, str, str, int, int, float, float]] = {}
        serving: set[str] = set()
        for inst in instances:
            if inst.status is None:
                continue
            serving.add(inst.name)
            for q in inst.status.engine.queue:
                key = row_key(inst.name, q.genkey)
                self._cached[key] = int(getattr(q, "cached_tokens", 0) or 0)
                seen[key] = (
                    q.genkey, q.origin.value, inst.name, q.state.value,
                    q.prompt_tokens, q.tokens, q.tokens_per_s, q.age_s,
                )
        self._gone &= seen.keys()  # forget what the instances no longer list
        for key in self._gone:
            del seen[key]
        for key, row in seen.items():
            if row[3] in FINISHED_REQUEST_STATES:
                self._finished_at.setdefault(key, now)
            else:
                self._finished_at.pop(key, None)
        for key, row in self._last.items():
            if key not in seen:  # the instance no longer lists it: it ended
                self._finished_at.setdefault(key, now)
                ended = "ended" if row[2] in serving else "stopped"
                seen[key] = row if row[3] in FINISHED_REQUEST_STATES | {"ended", "stopped"} \
                    else row[:3] + (ended,) + row[4:]
        rows: dict[str, tuple[object, ...]] = {}
        kept: set[str] = set()
        for key, row in seen.items():
            finished = self._finished_at.get(key)
            if finished is not None and now - finished >= self.fade_after_s:
                self._finished_at.pop(key, None)
                self._gone.add(key)
                continue
            kept.add(key)
            if self._matches(row):
                rows[key] = self._cells_for(row, self._cached.get(key, 0), faded=finished is not None)
        self._last = {k: v for k, v in seen.items() if k in kept}
        self._cached = {k: v for k, v in self._cached.items() if k in kept}
        self.sync_rows(rows)
        busy = sum(1 for k in kept if k not in self._finished_at)
        shown = f" · {len(rows)} match /{self.filter_text}" if self.filter_text else ""
        self.border_subtitle = f"{busy} active{shown} · a abort · / filter"

    def _matches(self, row: tuple) -> bool:
        query = self.filter_text.strip().lower()
        if not query:
            return True
        return any(query in str(part).lower() for part in row[:4])

    def set_filter(self, text: str) -> None:
        """Show only rows whose id, origin, instance or state contain ``text`` ('' shows all)."""
        self.filter_text = text
        rows = {k: self._cells_for(r, self._cached.get(k, 0), faded=k in self._finished_at)
                for k, r in self._last.items() if self._matches(r)}
        self.sync_rows(rows)
        busy = sum(1 for k in self._last if k not in self._finished_at)
        shown = f" · {len(rows)} match /{text}" if text else ""
        self.border_subtitle = f"{busy} active{shown} · a abort · / filter"

    def request_state(self, instance: str, genkey: str) -> tuple[str, str] | None:
        """(origin, state) of a listed request, or None when it is no longer listed."""
        row = self._last.get(row_key(instance, genkey))
        return (row[1], row[3]) if row else None

    @staticmethod
    def _cells_for(row: tuple, cached: int, faded: bool) -> tuple[object, ...]:
        genkey, origin, instance, state, prompt_tokens, tokens, tps, age = row
        cells = (
            gauges.plain(genkey[-8:]),
            "[b]local[/]" if origin == "local" else "horde",
            gauges.plain(instance),
            state,
            f"{tokens} (+{prompt_tokens}p)",
            f"{cached}" if cached else "-",
            f"{tps:.1f}",
            gauges.duration(age),
        )
        if faded:
            return tuple(f"[dim]{c}[/dim]" for c in cells)
        return cells

    def selected_request(self) -> tuple[str, str] | None:
        """(instance, genkey) under the cursor, or None."""
        key = self.selected_key
        return split_key(key) if key else None
