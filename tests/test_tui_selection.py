"""Picking an instance by name sticks: the tables' cursors follow, and a late highlight cannot undo it."""

from __future__ import annotations

from koboldtui.tui.widgets.instance_tables import BatchTable, InstancesTable
from tests.test_tui_dashboard import make_app, repoll
from tests.tui_fakes import FakeBackend


async def test_select_instance_right_after_the_first_poll_sticks() -> None:
    app = make_app(FakeBackend())
    async with app.run_test(size=(120, 40)) as pilot:
        while not app.polls_done:  # the tables' first rows are added now; their highlights are still queued
            await pilot.pause(0)
        app.select_instance("chat-cpu")
        await pilot.pause(0.1)
        await repoll(pilot, app)
        await pilot.pause(0.1)
        assert app.selected_instance == "chat-cpu"
        dashboard = app.screen
        assert dashboard.query_one(InstancesTable).selected_key == "chat-cpu"
        assert dashboard.query_one(BatchTable).selected_key == "chat-cpu"
        await pilot.press("x")  # the keys act on it: chat-cpu is stopped, so nothing to stop
        await pilot.pause(0.1)
        assert any("chat-cpu is stopped" in str(n.message) for n in app._notifications)


async def test_moving_the_cursor_still_selects() -> None:
    app = make_app(FakeBackend())
    async with app.run_test(size=(120, 40)) as pilot:
        while not app.polls_done:
            await pilot.pause(0)
        await pilot.pause(0.2)
        table = app.screen.query_one(InstancesTable)
        table.focus()
        first = app.selected_instance
        await pilot.press("down")
        await pilot.pause(0.1)
        assert app.selected_instance != first and app.selected_instance == table.selected_key
