"""A DataTable that syncs rows by stable key, updating only cells that changed.

Clearing and refilling a table every tick loses the cursor and flickers; updating
cells in place keeps the selection where the person left it. A table may also name the
columns it can do without (``DROP_ORDER``): on a narrow terminal those go first, so
the ones a person needs are never cut off at the edge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.events import Resize
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, RowDoesNotExist


@lru_cache(maxsize=1024)
def _markup_width(text: str) -> int:
    return Text.from_markup(text).cell_len if "[" in text else Text(text).cell_len


def cell_width(cell: object) -> int:
    """How many terminal cells a table cell takes (markup strings counted as drawn)."""
    if isinstance(cell, Text):
        return cell.cell_len
    if isinstance(cell, str):
        return _markup_width(cell)
    return len(str(cell))


class KeyedTable(DataTable):
    """DataTable with ``sync_rows``: add new keys, update changed cells, drop missing keys."""

    # Home/End go to the first/last row (as in k9s and lazydocker); DataTable's own scroll
    # sideways in a row table, which hid the names column off the left edge.
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("home", "first_row", "First row", show=False),
        Binding("end", "last_row", "Last row", show=False),
    ]
    COLUMNS: Sequence[tuple[str, str]] = ()  # (key, label)
    DROP_ORDER: Sequence[str] = ()  # column keys to hide, first to last, when the table is too narrow
    WIDTH_CAPS: ClassVar[Mapping[str, int]] = {}  # a column counted at most this wide when fitting (it may clip)

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)
        self._cells: dict[str, tuple[object, ...]] = {}
        self._shown: tuple[str, ...] = tuple(key for key, _ in self.COLUMNS)

    def on_mount(self) -> None:
        for key, label in self.COLUMNS:
            if key in self._shown:
                self.add_column(label, key=key)

    @property
    def shown_columns(self) -> tuple[str, ...]:
        """The column keys on screen now (the rest were dropped for width)."""
        return self._shown

    def _project(self, cells: tuple[object, ...]) -> list[object]:
        return [cell for (key, _), cell in zip(self.COLUMNS, cells) if key in self._shown]

    def sync_rows(self, rows: dict[str, tuple[object, ...]]) -> None:
        """Make the table show exactly ``rows`` (in insertion order for new ones).

        The cursor stays on the same key (request id, instance name), not the same row
        number: a row that vanishes above it must not move the selection onto another thing.
        """
        pinned = self.selected_key
        changed = False
        for key in [k for k in self._cells if k not in rows]:
            changed = True
            del self._cells[key]
            try:
                self.remove_row(key)
            except RowDoesNotExist:
                pass
        for key, cells in rows.items():
            old = self._cells.get(key)
            if old is None:
                self.add_row(*self._project(cells), key=key)
            elif old != cells:
                for (col_key, _label), new, prev in zip(self.COLUMNS, cells, old):
                    if new != prev and col_key in self._shown:
                        self.update_cell(key, col_key, new, update_width=True)
            changed = changed or old != cells
            self._cells[key] = cells
        if changed:
            self._refit()
            self._keep_cursor_on(pinned)

    def _keep_cursor_on(self, key: str | None) -> None:
        """Put the cursor back on ``key`` when rows above it came or went (no-op when it is gone)."""
        if key is None or key not in self._cells or self.selected_key == key:
            return
        try:
            self.move_cursor(row=self.get_row_index(key), animate=False)
        except RowDoesNotExist:
            pass

    # fitting the width ---------------------------------------------------------------------
    def on_resize(self, event: Resize) -> None:
        self._refit()

    def columns_that_fit(self, width: int) -> tuple[str, ...]:
        """The columns to show in ``width`` cells: all, less ``DROP_ORDER`` from the front until they fit."""
        keys = [key for key, _ in self.COLUMNS]
        if not self.DROP_ORDER or width <= 0:
            return tuple(keys)
        pad = 2 * self.cell_padding
        need = {}
        for i, (key, label) in enumerate(self.COLUMNS):
            widest = max([cell_width(label)] + [cell_width(cells[i]) for cells in self._cells.values()])
            need[key] = min(widest, self.WIDTH_CAPS.get(key, widest)) + pad
        shown = list(keys)
        for key in self.DROP_ORDER:
            if sum(need[k] for k in shown) <= width:
                break
            if key in shown:
                shown.remove(key)
        return tuple(shown)

    def _refit(self) -> None:
        if not self.DROP_ORDER or not self.is_mounted:
            return
        shown = self.columns_that_fit(self.scrollable_content_region.width)
        if shown != self._shown:
            self._rebuild(shown)

    def _rebuild(self, shown: tuple[str, ...]) -> None:
        """Redraw with another set of columns, keeping the cursor on the same row."""
        selected = self.selected_key
        self._shown = shown
        self.clear(columns=True)
        for key, label in self.COLUMNS:
            if key in shown:
                self.add_column(label, key=key)
        for key, cells in self._cells.items():
            self.add_row(*self._project(cells), key=key)
        if selected is not None:
            try:
                self.move_cursor(row=self.get_row_index(selected), animate=False)
            except RowDoesNotExist:
                pass

    def action_first_row(self) -> None:
        self.action_scroll_top()
        self.scroll_x = 0

    def action_last_row(self) -> None:
        self.action_scroll_bottom()
        self.scroll_x = 0

    # reading ---------------------------------------------------------------------------------
    @property
    def selected_key(self) -> str | None:
        """Row key under the cursor, or None when the table is empty."""
        if not self.row_count:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except (CellDoesNotExist, RowDoesNotExist):  # cursor outside the rows while they change
            return None

    def cells(self, key: str) -> tuple[object, ...] | None:
        """What the table shows for a row (tests read it like a person would)."""
        return self._cells.get(key)

    def cell(self, key: str, column: str) -> object | None:
        """One cell of a row by column key (shown or dropped for width); None when no such row."""
        cells = self._cells.get(key)
        if cells is None:
            return None
        return cells[[k for k, _ in self.COLUMNS].index(column)]
