"""What the panel's keys do: each action runs its backend call in a worker and reports back.

Kept apart from the polling app so the list of things a person can do reads in one place;
failures come back as notifications that say what failed and what to do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from textual.css.query import NoMatches
from textual.worker import Worker, WorkerState

from koboldtui.tui import gauges
from koboldtui.tui.backend import FINISHED_REQUEST_STATES, InstanceDraft, InstanceView
from koboldtui.tui.panel_words import panel_words
from koboldtui.tui.screens.confirm import ConfirmScreen
from koboldtui.tui.screens.gpu_priority import GpuPriorityScreen
from koboldtui.tui.screens.instance_detail import InstanceDetailScreen
from koboldtui.tui.screens.instance_form import InstanceFormScreen
from koboldtui.tui.screens.log_view import LogScreen
from koboldtui.tui.screens.pickers import BatchFormScreen, ModelPickerScreen
from koboldtui.tui.screens.prompt import PromptScreen
from koboldtui.tui.screens.quick_draft import edit_guess, new_instance_guess
from koboldtui.tui.screens.switch_progress import SwitchProgressScreen
from koboldtui.tui.widgets.queue_table import QueueTable

if TYPE_CHECKING:
    from koboldtui.tui.app import KoboldPanel

ACTION_GROUP = "panel-action"
HORDE_ACTIONS = {
    "start": ("horde_start", "Horde worker starting"),
    "stop": ("horde_stop", "Horde worker stopping"),
    "maintenance-on": ("horde_maintenance_on", "Horde worker entering maintenance"),
    "maintenance-off": ("horde_maintenance_off", "Horde worker leaving maintenance"),
}


def in_flight(inst: InstanceView) -> tuple[int, int]:
    """(local, Horde) requests the instance is working on or holding in its queue."""
    if inst.status is None:
        return 0, 0
    local = horde = 0
    for q in inst.status.engine.queue:
        if q.state.value in FINISHED_REQUEST_STATES:
            continue
        if q.origin.value == "horde":
            horde += 1
        else:
            local += 1
    return local, horde


def active_requests(inst: InstanceView) -> int:
    """How many requests a stop of this instance would abort."""
    return sum(in_flight(inst))


def loss_words(inst: InstanceView) -> str:
    """'3 requests in flight (1 local, 2 Horde) will be aborted …' or '' when idle."""
    local, horde = in_flight(inst)
    total = local + horde
    if not total:
        return ""
    parts = [p for p in (f"{local} local" if local else "", f"{horde} Horde" if horde else "") if p]
    text = f"{total} request{'s' if total != 1 else ''} in flight ({', '.join(parts)}) will be aborted"
    if horde:
        text += "; the Horde counts aborted jobs as faulted"
    return text + "."


def kind_refusal(inst: InstanceView, key: str) -> str | None:
    """Why ``key`` cannot work on ``inst``'s kind (a remote is only watched; a command instance
    is not koboldtui serve), or None when it can."""
    name = inst.name
    if inst.kind == "remote":
        return {
            "m": f"{name} is remote: its model is chosen on its own machine",
            "b": f"{name} is remote: its batch size is set on its own machine",
            "s": f"{name} is remote: koboldtui only watches it; start it on its own machine",
            "x": f"{name} is remote: koboldtui only watches it; stop it on its own machine",
            "R": f"{name} is remote: koboldtui only watches it; restart it on its own machine",
            "w": f"{name} is remote: its Horde worker is run on its own machine",
        }.get(key)
    if inst.kind == "command":
        if key == "m" and "{model}" not in inst.command:
            return f"{name}'s command line names its model itself: change it in the command field (e)"
        if key == "b":
            return f"{name} runs its own command: set the batch size in the command field (e)"
        if key == "w":
            return f"{name} runs its own command: the Horde keys (w W z Z) work on koboldtui serve instances"
    return None


class PanelActions:
    """Mixin for ``KoboldPanel``: one method per key the dashboard offers."""

    def run_backend(self: KoboldPanel, label: str, fn: Callable[..., Any], *args: Any, done: str | None = None) -> None:
        """Run a blocking backend call in a worker; success/failure arrive as notifications."""

        def call() -> Any:
            result = fn(*args)
            return done if done is not None else (result if isinstance(result, str) else None)

        self.run_worker(call, name=label, group=ACTION_GROUP, thread=True, exit_on_error=False)

    def on_worker_state_changed(self: KoboldPanel, event: Worker.StateChanged) -> None:
        """The one place action failures turn into messages for the person."""
        worker = event.worker
        if worker.group != ACTION_GROUP:
            return
        if event.state == WorkerState.ERROR:
            self.notify(panel_words(f"{worker.name} failed: {worker.error}"), title="Action failed", severity="error",
                        timeout=10, markup=False)
            self.poll_now()
        elif event.state == WorkerState.SUCCESS:
            if worker.result:
                self.notify(str(worker.result), markup=False)
            self.poll_now()

    def confirm_loss(self: KoboldPanel, inst: InstanceView, doing: str, then: Callable[[], None]) -> None:
        """Run ``then`` now when the instance is idle; else say what is lost and wait for a yes."""
        words = loss_words(inst)
        if not words:
            then()
            return

        def answered(yes: bool | None) -> None:
            if yes:
                then()

        self.push_screen(ConfirmScreen(
            f"{doing} {gauges.plain(inst.name)}?\n[$warning]{words}[/]",
            yes=doing, no="Keep it running", default_yes=False), answered)

    def selected(self: KoboldPanel) -> InstanceView | None:
        """The instance the keys act on; tells the person when there is none."""
        inst = next((i for i in self.instances if i.name == self.selected_instance), None)
        if inst is None:
            self.notify("No instance selected: create one with n", severity="warning")
        return inst

    def offered(self: KoboldPanel, inst: InstanceView, key: str) -> bool:
        """Whether ``key`` can work on this kind of instance; if not, say why (and what does)."""
        why = kind_refusal(inst, key)
        if why:
            self.notify(why, severity="warning", markup=False)
        return why is None

    # first run -----------------------------------------------------------------------
    def create_first_instance(self: KoboldPanel) -> None:
        def create() -> None:
            draft = self.backend.default_draft()
            self.backend.save_instance(draft, None)
            self.backend.start_instance(draft.config.name)

        self.notify("No instances yet: creating one on the bundled model and starting it", title="First run")
        self.run_backend("creating the first instance", create, done="First instance is starting")

    # instances -------------------------------------------------------------------------
    def action_new_instance(self: KoboldPanel) -> None:
        self._open_form(None)

    def action_edit_instance(self: KoboldPanel) -> None:
        inst = self.selected()
        if inst is not None:
            self._open_form(inst)

    def _open_form(self: KoboldPanel, inst: InstanceView | None) -> None:
        """Open the form at once on a guess; the backend's draft fills it from a worker."""
        names = {i.name for i in self.instances}
        guess = edit_guess(inst) if inst else new_instance_guess(self.instances, self.gpu_report)
        form = InstanceFormScreen(self.backend, guess, self.gpu_report, inst.name if inst else None, names,
                                  pending=True)

        def load() -> None:
            try:
                draft = self.backend.draft_for(inst.name) if inst else self.backend.default_draft()
            except Exception as exc:  # noqa: BLE001 - shown to the person, never raised into the UI
                what = f"the settings of {inst.name}" if inst else "a new instance's defaults"
                form.from_thread(form.draft_failed, f"could not read {what}: {exc}")
                return
            form.from_thread(form.draft_arrived, draft)

        def saved(draft: InstanceDraft | None) -> None:
            if draft is None:
                return
            name = draft.config.name
            if inst is None and draft.kind == "remote":  # watched, never started from here
                self.run_backend(f"adding {name}", self.backend.save_instance, draft, None,
                                 done=f"{name} added: the panel watches {draft.url}")
            elif inst is None:
                self.run_backend(f"creating {name}", self._create_and_start, draft, done=f"{name} created and starting")
            else:
                restart = inst.running and draft.kind != "remote"  # a remote is only watched
                self.run_backend(f"saving {name}", self._save_and_restart, draft, inst.name, restart,
                                 done=f"{name} saved" + (" and restarting" if restart else ""))

        self.push_screen(form, saved)
        self.run_worker(load, name="loading the instance settings", group="form-draft", thread=True,
                        exit_on_error=False)

    def _create_and_start(self: KoboldPanel, draft: InstanceDraft) -> None:
        self.backend.save_instance(draft, None)
        self.backend.start_instance(draft.config.name)

    def _save_and_restart(self: KoboldPanel, draft: InstanceDraft, original: str, running: bool) -> None:
        self.backend.save_instance(draft, original)
        if running:
            self.backend.restart_instance(draft.config.name)

    def action_start_instance(self: KoboldPanel) -> None:
        inst = self.selected()
        if inst is None:
            return
        if not self.offered(inst, "s"):
            return
        if inst.running:
            self.notify(f"{inst.name} is {inst.state} already; R restarts it", severity="warning")
            return
        self.run_backend(f"starting {inst.name}", self.backend.start_instance, inst.name,
                         done=f"{inst.name}: start requested; its row shows loading, then ready (or why it failed)")

    def action_stop_instance(self: KoboldPanel) -> None:
        inst = self.selected()
        if inst is None:
            return
        if not self.offered(inst, "x"):
            return
        if not inst.running:
            self.notify(f"{inst.name} is {inst.state}: nothing to stop", severity="warning")
            return
        self.confirm_loss(inst, "Stop", lambda: self.run_backend(
            f"stopping {inst.name}", self.backend.stop_instance, inst.name,
            done=f"{inst.name} stopped; it stays stopped (also in the next panel) until you start it with s"))

    def action_restart_instance(self: KoboldPanel) -> None:
        inst = self.selected()
        if inst is not None and self.offered(inst, "R"):
            self.confirm_loss(inst, "Restart", lambda: self.run_backend(
                f"restarting {inst.name}", self.backend.restart_instance, inst.name,
                done=f"{inst.name}: restart requested"))

    def action_instance_detail(self: KoboldPanel) -> None:
        """Enter on an instance: its settings, last error, exit code and log tail."""
        inst = self.selected()
        if inst is None:
            return

        def chosen(what: str | None) -> None:
            if what == "log":
                self.action_show_log()
            elif what == "start":
                self.action_start_instance()
            elif what == "edit":
                self.action_edit_instance()
            elif what == "dismiss":
                self.action_dismiss_failure()

        self.push_screen(InstanceDetailScreen(self.backend, inst), chosen)

    def action_dismiss_failure(self: KoboldPanel) -> None:
        """d: forget a failure that was read; the row goes back to stopped (the log keeps it)."""
        inst = self.selected()
        if inst is None:
            return
        if inst.state != "failed":
            self.notify(f"{inst.name} is {inst.state}: no failure to dismiss", severity="warning")
            return
        self.run_backend(f"dismissing the failure of {inst.name}", self.backend.dismiss_failure, inst.name,
                         done=f"{inst.name}: failure dismissed; s starts it again, l shows its log")

    # model switch ------------------------------------------------------------------------
    def action_pick_model(self: KoboldPanel) -> None:
        inst = self.selected()
        if inst is not None and inst.is_gateway:  # its "model" is the box's current model
            self.action_use_model()
            return
        if inst is None or not self.offered(inst, "m"):
            return
        current = inst.model or "bundled"  # the spec's model: "bundled" or a path, as the catalogue names it

        def picked(path: str | None) -> None:
            if not path:
                return
            if path == current:
                self.notify(f"{inst.name} already runs {path.rsplit('/', 1)[-1]}", severity="warning")
                return
            self.request_model_switch(path)

        self.push_screen(ModelPickerScreen(self.backend, inst.name, current), picked)

    def request_model_switch(self: KoboldPanel, model: str) -> None:
        """Check the model (off the UI thread), then confirm, then stop → start with progress.

        A file that cannot be served (unreadable, vocab-only, too big) is refused here, before
        the question, and the running instance is left alone.
        """
        inst = self.selected()
        if inst is None or not self.offered(inst, "m"):
            return
        short = model.rsplit("/", 1)[-1]

        def answered(yes: bool | None) -> None:
            if yes:
                self.push_screen(SwitchProgressScreen(self.backend, inst.name, model), lambda _ok: self.poll_now())

        def ask(problem: str | None) -> None:
            if problem:
                self.notify(f"{inst.name} keeps its model: {short} cannot be used: {problem}",
                            title="Model refused", severity="error", timeout=12, markup=False)
                return
            latest = next((i for i in self.instances if i.name == inst.name), inst)
            words = loss_words(latest)
            lost = f"[$warning]{words}[/]" if words else "[$text-muted]No requests are in flight.[/]"
            self.push_screen(ConfirmScreen(
                f"Switch {gauges.plain(inst.name)} to {gauges.plain(short)}?\n"
                f"It stops the instance, then starts it on the new model (if that fails, it goes back"
                f" to the current one). {lost}",
                yes="Switch", no="Keep current", default_yes=not words), answered)

        def check() -> None:
            try:
                problem = self.backend.check_model(inst.name, model)
            except Exception as exc:  # noqa: BLE001 - shown to the person, never raised into the UI
                problem = f"it could not be checked: {exc}"
            self.call_from_thread(ask, problem)

        self.run_worker(check, name=f"checking {short}", group="model-check", thread=True, exit_on_error=False)

    # batch, GPUs, prompt, log ------------------------------------------------------------------
    def action_batch_size(self: KoboldPanel) -> None:
        inst = self.selected()
        if inst is None:
            return
        if not self.offered(inst, "b"):
            return
        current = inst.status.engine.n_batch if inst.status else 512

        def chosen(value: int | None) -> None:
            if value is None or value == current:
                return
            latest = next((i for i in self.instances if i.name == inst.name), inst)
            self.confirm_loss(latest, "Reload", lambda: self.run_backend(
                f"setting the batch size of {inst.name}", self.backend.set_batch_size, inst.name,
                value, done=f"{inst.name}: batch size {value}" + (", reloading" if latest.running else "")))

        self.push_screen(BatchFormScreen(inst.name, current), chosen)

    def action_gpu_priority(self: KoboldPanel) -> None:
        self.push_screen(GpuPriorityScreen(self.backend, self.gpu_report))

    def action_prompt(self: KoboldPanel) -> None:
        inst = self.selected()
        if inst is not None:
            self.push_screen(PromptScreen(self.backend, inst.name, getattr(self, "prompt_max_tokens", 200)))

    def action_show_log(self: KoboldPanel) -> None:
        inst = self.selected()
        if inst is not None:
            self.push_screen(LogScreen(self.backend, inst.name))

    # queue and horde ---------------------------------------------------------------------
    def action_abort_request(self: KoboldPanel) -> None:
        try:
            queue = self.dashboard.query_one(QueueTable)
        except NoMatches:  # the dashboard is being (re)built: no rows to pick from yet
            return
        picked = queue.selected_request()
        if picked is None:
            self.notify("No request selected: focus the queue (3) and pick one", severity="warning")
            return
        instance, genkey = picked
        row = queue.request_state(instance, genkey)
        if row is None or row[1] in FINISHED_REQUEST_STATES or row[1] in ("stopped", "ended"):
            state = row[1] if row else "gone"
            self.notify(f"request {genkey[-8:]} has ended already ({state}): nothing to abort", severity="warning")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.run_backend(f"aborting {genkey[-8:]}", self._abort, instance, genkey)

        if row[0] == "horde":
            question = (f"Abort Horde job {gauges.plain(genkey[-8:])} on {gauges.plain(instance)}?\n"
                        "[$warning]The worker reports it to the Horde as faulted (no kudos; many faults can put the"
                        " worker into maintenance).[/]")
        else:
            question = (f"Abort local request {gauges.plain(genkey[-8:])} on {gauges.plain(instance)}?\n"
                        f"[$warning]It is {gauges.plain(row[1])}; its client gets what was generated so far"
                        " and no more.[/]")
        self.push_screen(ConfirmScreen(question, yes="Abort it", no="Let it finish", default_yes=False), answered)

    def _abort(self: KoboldPanel, instance: str, genkey: str) -> str:
        known = self.backend.abort(instance, genkey)
        return (f"request {genkey[-8:]} aborted" if known
                else f"request {genkey[-8:]} had already ended on {instance}: nothing to abort")

    def action_horde(self: KoboldPanel, what: str) -> None:
        inst = self.selected()
        if inst is None or what not in HORDE_ACTIONS:
            return
        if not self.offered(inst, "w"):
            return
        method, done = HORDE_ACTIONS[what]
        if method == "horde_maintenance_on":
            self.run_backend(f"{what} on {inst.name}", self.backend.horde_maintenance, inst.name, True, done=done)
        elif method == "horde_maintenance_off":
            self.run_backend(f"{what} on {inst.name}", self.backend.horde_maintenance, inst.name, False, done=done)
        else:
            self.run_backend(f"Horde {what} on {inst.name}", getattr(self.backend, method), inst.name, done=done)
