"""With NO_COLOR the GPU checkboxes of the instance form say [x] / [ ] (issue 19 leftover): Textual's
coloured ▐X▌ looked the same ticked or not."""

from __future__ import annotations

import re

from koboldtui.tui.widgets.marked_selection import MarkedSelectionList
from tests.test_tui_dashboard import make_app, wait_for
from tests.test_tui_forms import open_new_form
from tests.tui_fakes import FakeBackend, screen_text


def gpu_marks(app) -> list[str]:
    """The box drawn before each GPU of the form's list, in screen order."""
    return re.findall(r"(\[x\]|\[ \]|▐X▌) \d NVIDIA", screen_text(app))


async def test_gpu_checkboxes_say_on_or_off_in_text_without_colour(monkeypatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    app = make_app(FakeBackend())
    async with app.run_test(size=(120, 40)) as pilot:
        form = await open_new_form(pilot, app)
        await wait_for(pilot, lambda: bool(form.query(MarkedSelectionList)))
        gpus = form.query_one(MarkedSelectionList)
        gpus.focus()
        gpus.scroll_visible(animate=False)
        await pilot.pause(0.1)
        before = gpu_marks(app)
        assert len(before) == 2 and all(m in ("[x]", "[ ]") for m in before), screen_text(app)
        gpus.highlighted = 1
        await pilot.press("space")
        await pilot.pause(0.1)
        after = gpu_marks(app)
        assert after[0] == before[0] and after[1] != before[1], (before, after)
        assert set(gpus.selected) == ({gpus.get_option_at_index(0).value} if before[0] == "[x]" else set()) \
            | ({gpus.get_option_at_index(1).value} if after[1] == "[x]" else set())


async def test_with_colour_the_checkbox_is_textuals() -> None:
    app = make_app(FakeBackend())
    async with app.run_test(size=(120, 40)) as pilot:
        form = await open_new_form(pilot, app)
        await wait_for(pilot, lambda: bool(form.query(MarkedSelectionList)))
        form.query_one(MarkedSelectionList).scroll_visible(animate=False)
        await pilot.pause(0.1)
        marks = gpu_marks(app)
        assert len(marks) == 2 and all(m == "▐X▌" for m in marks), marks
