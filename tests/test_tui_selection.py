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


async def test_a_row_finishing_above_keeps_the_queue_cursor_on_its_request_and_a_aborts_that_one() -> None:
    """Issue 19: the cursor is pinned to the request id, not the row number."""
    from koboldtui.engine.types import Origin, QueueEntry, RequestState
    from koboldtui.tui.screens.confirm import ConfirmScreen
    from koboldtui.tui.widgets.queue_table import QueueTable, row_key
    from tests.test_tui_dashboard import settle, wait_for
    from tests.tui_fakes import FakeClock

    backend, clock = FakeBackend(), FakeClock()
    app = make_app(backend, clock, fade_after_s=2.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        queue = app.screen.query_one(QueueTable)
        await pilot.press("3", "down")  # the second row: the generating Horde job
        chosen = row_key("main", "KTUIhorde0000001")
        assert queue.selected_key == chosen and queue.cursor_row == 1
        first, *rest = backend.queue  # the first row finishes, then fades out
        backend.queue = (QueueEntry(first.genkey, first.origin, RequestState.DONE, 312, 100, 40.0, 3.0), *rest)
        await repoll(pilot, app)
        clock.advance(3)
        await repoll(pilot, app)
        assert queue.cells(row_key("main", first.genkey)) is None and queue.row_count == 3
        assert queue.selected_key == chosen and queue.cursor_row == 0  # moved up with its request
        await pilot.press("a")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "horde0000001"[-8:] in app.screen.question
        await pilot.press("y")
        await wait_for(pilot, lambda: any(c[0] == "abort" for c in backend.calls))
        assert [c for c in backend.calls if c[0] == "abort"] == [("abort", "main", "KTUIhorde0000001")]
        # a local request asks as well (it used to be aborted on the spot)
        await pilot.press("end")
        assert queue.selected_key == row_key("main", "KTUIq00000000003")
        await pilot.press("a")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "local request" in app.screen.question and "00000003" in app.screen.question
        await pilot.press("n")
        await pilot.pause(0.1)
        assert ("abort", "main", "KTUIq00000000003") not in backend.calls
        assert Origin.LOCAL  # (the enum is the queue's own)


async def test_esc_in_the_prompt_box_closes_it_and_the_generation_goes_on() -> None:
    """Esc never aborts silently: the box closes, the stream is read to its end, a note says so."""
    import threading

    from koboldtui.tui.screens.prompt import PromptScreen
    from tests.test_tui_dashboard import settle, wait_for

    backend = FakeBackend()
    release, finished = threading.Event(), threading.Event()

    def slow(instance: str, prompt: str, max_tokens: int, temperature=None):
        try:
            yield "first "
            release.wait(5)
            yield from ("second ", "third")
            finished.set()
        except GeneratorExit:  # closing the generator = the HTTP stream = an abort on the instance
            raise

    backend.stream_prompt = slow  # type: ignore[method-assign]
    app = make_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        await pilot.press("p")
        await wait_for(pilot, lambda: isinstance(app.screen, PromptScreen))
        await pilot.press(*"Hi", "enter")
        await wait_for(pilot, lambda: "first" in app.screen.output)
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen.id == "dashboard")
        assert any("goes on generating" in str(n.message) for n in app._notifications)
        release.set()
        await wait_for(pilot, finished.is_set)  # read to the end: not aborted
        await wait_for(pilot, lambda: any("finished: 3 tokens" in str(n.message) for n in app._notifications))
