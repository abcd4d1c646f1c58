"""A SelectionList whose checkboxes read ``[x]`` / ``[ ]`` when colour is off (``NO_COLOR``).

Textual draws a checkbox as a coloured ``▐X▌``: ticked and unticked differ only in colour, so
with ``NO_COLOR`` every GPU in the form looked the same grey block. With colour off the box
is drawn as text instead (three cells, like the button it replaces); with colour on it is
Textual's own.
"""

from __future__ import annotations

from typing import Any

from rich.segment import Segment
from textual.strip import Strip
from textual.widgets import SelectionList
from textual.widgets.option_list import OptionDoesNotExist

MARK_ON, MARK_OFF = "[x]", "[ ]"


class MarkedSelectionList(SelectionList[Any]):
    """SelectionList with a textual on/off mark under NO_COLOR."""

    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        if not getattr(self.app, "no_color", False):
            return strip
        try:
            selection = self.get_option_at_index(self.scroll_offset.y + y)
        except OptionDoesNotExist:
            return strip
        segments = list(strip)
        if len(segments) < 4:  # not a checkbox line: leave it as drawn
            return strip
        mark = MARK_ON if selection.value in self._selected else MARK_OFF
        style = segments[3].style  # the prompt's own style (the box's sides carry colour-only styles)
        return Strip([Segment(mark, style), *segments[3:]])
