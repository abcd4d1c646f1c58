"""A DataTable that syncs rows by stable key, updating only cells that changed.

Clearing and refilling a table every tick loses the cursor and flickers; updating
cells in place keeps the selection where the person left it.
"""

from __future__ import annotations

from collections.abc import Sequence

from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, RowDoesNotExist


class KeyedTable(DataTable):
    """DataTable with ``sync_rows``: add new keys, update changed cells, drop missing keys."""

    COLUMNS: Sequence[tuple[str, str]] = ()  # (key, label)

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)
        self._cells: dict[str, tuple[object, ...]] = {}

    def on_mount(self) -> None:
        for key, label in self.COLUMNS:
            self.add_column(label, key=key)

    def sync_rows(self, rows: dict[str, tuple[object, ...]]) -> None:
        """Make the table show exactly ``rows`` (in insertion order for new ones)."""
        for key in [k for k in self._cells if k not in rows]:
            del self._cells[key]
            try:
                self.remove_row(key)
            except RowDoesNotExist:
                pass
        for key, cells in rows.items():
            old = self._cells.get(key)
            if old is None:
                self.add_row(*cells, key=key)
            elif old != cells:
                for (col_key, _label), new, prev in zip(self.COLUMNS, cells, old):
                    if new != prev:
                        self.update_cell(key, col_key, new, update_width=True)
            self._cells[key] = cells

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
