"""Density (issue 12 item 6): machine gauges, per-instance columns that fit the width, wide layouts."""

from __future__ import annotations

from koboldtui.tui.widgets.gpu_panel import GpuPanel
from koboldtui.tui.widgets.history_spark import HistorySpark, spark_lines
from koboldtui.tui.widgets.instance_tables import BatchTable, InstancesTable
from koboldtui.tui.widgets.keyed_table import cell_width
from koboldtui.tui.widgets.system_gauges import SystemGauges
from tests.test_tui_dashboard import make_app, settle, wait_for
from tests.tui_fakes import FakeBackend, fake_machine, screen_text

ALL_COLUMNS = ("name", "model", "address", "gpus", "restarts", "uptime", "rss", "cpu", "tps", "cache", "state")


def fits(table: InstancesTable | BatchTable) -> bool:
    """Every shown column is as wide as its widest cell (up to the state cap) and they all fit."""
    shown = table.shown_columns
    need = 0
    for i, (key, label) in enumerate(table.COLUMNS):
        if key not in shown:
            continue
        widest = max([cell_width(label)] + [cell_width(c[i]) for c in table._cells.values()])
        need += min(widest, table.WIDTH_CAPS.get(key, widest)) + 2 * table.cell_padding
    return need <= table.scrollable_content_region.width


async def test_cpu_mode_shows_the_reason_and_cpu_ram_load_gauges_with_a_minute_of_history() -> None:
    app = make_app(FakeBackend(gpus=False))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        text = screen_text(app)
        assert "No NVIDIA GPU — running on CPU: NVML could not load" in text and "libnvidia-ml.so.1" in text
        assert "34.5% of 16 cores" in text and "20.0/64.0 GiB" in text and "5.42 4.87 3.90" in text
        sparks = app.screen.query_one(SystemGauges).query(HistorySpark)
        machine = fake_machine()
        assert [s.data for s in sparks] == [machine.cpu_history, machine.mem_history, machine.load_history]
        assert [s.top for s in sparks] == [100.0, 100.0, 16.0]  # a full load bar: every core busy


async def test_beside_gpus_the_machine_is_one_compact_line() -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        gauges = app.screen.query_one(SystemGauges)
        assert len(gauges.query(".sys-row")) == 1
        text = screen_text(app)
        assert "cpu  34%" in text and "ram 20/64G" in text and "load 5.4" in text


async def test_a_machine_without_readings_hides_the_gauges_instead_of_failing() -> None:
    backend = FakeBackend(gpus=False)
    backend.machine = None  # an older backend, or psutil could not read
    app = make_app(backend)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        assert app.screen.query_one(SystemGauges).display is False
        assert "No NVIDIA GPU" in screen_text(app)


async def test_instance_rows_carry_rss_cpu_speed_and_cache_hits() -> None:
    app = make_app()
    async with app.run_test(size=(200, 60)) as pilot:
        await settle(pilot, app)
        table = app.screen.query_one(InstancesTable)
        assert table.shown_columns == ALL_COLUMNS
        main = dict(zip(ALL_COLUMNS, table.cells("main")))
        assert (main["rss"], main["cpu"], main["tps"], main["cache"]) == ("1.2G", "187", "41.5", "15.4k 38%")
        stopped = dict(zip(ALL_COLUMNS, table.cells("chat-cpu")))
        assert (stopped["rss"], stopped["cpu"], stopped["tps"], stopped["cache"]) == ("-", "-", "-", "-")
        text = screen_text(app)
        assert "RSS" in text and "CPU%" in text and "15.4k 38%" in text


async def test_narrow_terminals_drop_the_least_needed_columns_and_clip_nothing() -> None:
    app = make_app()
    async with app.run_test(size=(200, 60)) as pilot:
        await settle(pilot, app)
        await pilot.press("down")  # the cursor on chat-cpu must survive the column changes
        table = app.screen.query_one(InstancesTable)
        for width, height in ((80, 24), (100, 30), (110, 30), (119, 30), (120, 40), (160, 40)):
            await pilot.resize_terminal(width, height)
            await wait_for(pilot, lambda: fits(table))
            shown = table.shown_columns
            # where requests go is never dropped (issue 19): the address stays at every width
            assert {"name", "model", "address", "gpus", "state"} <= set(shown), (width, shown)
            assert [k for k in ALL_COLUMNS if k in shown] == list(shown)  # the order never changes
            assert table.selected_key == "chat-cpu" and app.selected_instance == "chat-cpu"
            batch = app.screen.query_one(BatchTable)
            assert fits(batch), width  # slots and ctx/slot are never cut
            assert (":5001" in screen_text(app)) and ("1h02m" in screen_text(app)) == ("uptime" in shown), width
            batch.scroll_visible(animate=False)  # below the fold at 80x24
            await pilot.pause(0.05)
            text = screen_text(app)
            assert "▮▮▮▯ 3/4" in text and "ctx/slot" in text, width
        await pilot.resize_terminal(80, 24)
        # the columns may go in more than one layout pass under load: wait for the whole drop
        await wait_for(pilot, lambda: not {"cache", "restarts", "cpu"} & set(table.shown_columns))
        assert {"name", "model", "address", "gpus", "state"} <= set(table.shown_columns)


async def test_wide_terminals_put_the_cards_beside_the_tables() -> None:
    app = make_app()
    async with app.run_test(size=(200, 60)) as pilot:
        await settle(pilot, app)
        gpus, instances = app.screen.query_one(GpuPanel), app.screen.query_one(InstancesTable)
        queue = app.screen.query_one("#queue")
        gateway = app.screen.query_one("#gateway-line")  # the left column starts with the gateway's row
        assert gpus.region.x >= instances.region.right and gpus.region.y == gateway.region.y
        assert gateway.region.bottom == instances.region.y and gateway.region.right <= gpus.region.x
        assert queue.region.right <= gpus.region.x  # the queue keeps the left column
        assert queue.region.bottom >= 55  # and runs down the screen: no half-empty terminal
        assert len(app.screen.query_one(SystemGauges).query(".sys-row")) == 3  # room for full gauges
        await pilot.resize_terminal(120, 40)
        await wait_for(pilot, lambda: gpus.region.bottom <= instances.region.y)  # cards on top again
        await wait_for(pilot, lambda: len(app.screen.query_one(SystemGauges).query(".sys-row")) == 1)


async def test_horde_view_lists_recent_jobs_with_time_in_our_hands_and_says_why_no_requester_wait() -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        await pilot.press("H")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "HordeScreen")
        await pilot.pause(0.1)
        text = screen_text(app)
        assert "gemma-3-270m-it             96 tokens ·  41.0 tok/s ·    7.8 kudos · held 3.1s of 150s ttl · ok" in text
        assert "held -" in text  # a worker that did not say: no number made up
        assert "requester wait is not shown" in text


def test_history_sparks_keep_one_scale_so_a_quiet_gauge_looks_quiet() -> None:
    assert spark_lines([7.0, 7.0, 7.0], 3, 1, 100.0) == ["▁▁▁"]  # 7 % RAM is a sliver, never a full bar
    assert spark_lines([0.0, 50.0, 100.0], 5, 1, 100.0) == ["   ▄█"]  # newest at the right, empty before
    assert spark_lines([100.0, 50.0], 2, 2, 100.0) == ["█ ", "██"]  # two lines: half is the lower line
    assert spark_lines([1.0, 2.0, 3.0, 4.0], 2, 1, 4.0) == ["▆█"]  # only the newest that fit
