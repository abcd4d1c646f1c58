"""Every request in every instance, one stable row each; finished rows fade, then go.

Rows are keyed by instance and genkey so a request keeps its row (and the cursor) as
its state and token count change; a finished request stays dimmed for a while so the
person sees how it ended.
"""

from __future__ import annotations

from collections.abc import Iterable

from koboldtui.tui import gauges
from koboldtui.tui.backend import FINISHED_REQUEST_STATES, InstanceView
from koboldtui.tui.widgets.keyed_table import KeyedTable

FADE_AFTER_S = 10.0


def row_key(instance: str, genkey: str) -> str:
    return f"{instance}\x1f{genkey}"


def split_key(key: str) -> tuple[str, str]:
    instance, _, genkey = key.partition("\x1f")
    return instance, genkey


class QueueTable(KeyedTable):
    """All requests across instances; ``a`` aborts the selected one."""

    BORDER_TITLE = "Queue"
    COLUMNS = (
        ("id", "id"),
        ("origin", "origin"),
        ("instance", "instance"),
        ("state", "state"),
        ("tokens", "tokens"),
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

    def show(self, instances: Iterable[InstanceView], now: float) -> None:
        """Sync with the latest statuses; rows gone from a status count as finished."""
        seen: dict[str, tuple[str, str, str, str, int, int, float, float]] = {}
        for inst in instances:
            if inst.status is None:
                continue
            for q in inst.status.engine.queue:
                key = row_key(inst.name, q.genkey)
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
                seen[key] = row if row[3] in FINISHED_REQUEST_STATES else row[:3] + ("done",) + row[4:]
        rows: dict[str, tuple[object, ...]] = {}
        for key, row in seen.items():
            finished = self._finished_at.get(key)
            if finished is not None and now - finished >= self.fade_after_s:
                self._finished_at.pop(key, None)
                self._gone.add(key)
                continue
            rows[key] = self._cells_for(row, faded=finished is not None)
        self._last = {k: v for k, v in seen.items() if k in rows}
        self.sync_rows(rows)
        busy = sum(1 for k in rows if k not in self._finished_at)
        self.border_subtitle = f"{busy} active · a abort"

    @staticmethod
    def _cells_for(row: tuple, faded: bool) -> tuple[object, ...]:
        genkey, origin, instance, state, prompt_tokens, tokens, tps, age = row
        cells = (
            gauges.plain(genkey[-8:]),
            "[b]local[/]" if origin == "local" else "horde",
            gauges.plain(instance),
            state,
            f"{tokens} (+{prompt_tokens}p)",
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
