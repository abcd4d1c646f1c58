"""New/edit instance form: model from the catalogue, GPU set, live port and VRAM checks.

Checks run as the person types (port taken? does it fit?) so problems show up before
the instance is started, worded with what to change.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.lazy import Lazy
from textual.widgets import Button, Input, Label, Select, SelectionList, Static

from koboldtui.config import HordeSettings
from koboldtui.models.bundled import BUNDLED_MODEL_ALIAS as BUNDLED
from koboldtui.tui import gauges
from koboldtui.tui.backend import CatalogModel, GpuReport, InstanceDraft, PanelBackend
from koboldtui.tui.panel_words import panel_words
from koboldtui.tui.screens.form_checks import (
    FIELDS_WITH_MESSAGES,
    NAME_RE,
    as_float,
    as_int,
    field_of,
    kind_problems,
)
from koboldtui.tui.screens.later_fields import LaterFields
from koboldtui.tui.screens.modal import PanelModal
from koboldtui.tui.screens.model_path import GgufPathSuggester, PathInput, check_model_path
from koboldtui.tui.widgets.text_field import TextField

KIND_OPTIONS = [
    ("koboldtui serve (a GGUF model)", "serve"),
    ("command (any server: KoboldCpp, llama-server, sd.cpp, whisper.cpp...)", "command"),
    ("remote (watch a server on another box)", "remote"),
]


class InstanceFormScreen(PanelModal[InstanceDraft | None]):
    """Returns the edited draft on save, None on cancel."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "save", "Save", id="form-save"),
        Binding("escape", "cancel", "Cancel", id="form-cancel"),
    ]

    def __init__(
        self,
        backend: PanelBackend,
        draft: InstanceDraft,
        gpus: GpuReport,
        original_name: str | None,
        existing_names: set[str],
        *,
        pending: bool = False,
    ) -> None:
        """``pending``: ``draft`` is a guess (see quick_draft); ``draft_arrived`` brings the real one."""
        super().__init__(classes="modal")
        self.backend = backend
        self.draft = draft
        self.draft_pending = pending
        self._save_when_ready = False
        self._catalog: list[CatalogModel] | None = None
        self._drawn = False  # compose has built the fields (they may not be mounted yet)
        self._ready = False  # on_mount has run: the fields can be queried
        self._early: InstanceDraft | None = None  # arrived between compose and on_mount
        self._failed: str | None = None  # the draft could not be read before on_mount
        self.gpus = gpus
        self.original_name = original_name
        self.existing_names = existing_names - ({original_name} if original_name else set())
        self.port_message: str | None = None
        self.port_checked = False  # the first port check has answered
        # Focus the first field straight away: Textual's default ("*") focuses the scrolling
        # body first, and moving focus off it restyles every field (twice the cost of opening).
        self.AUTO_FOCUS = "#port" if original_name else "#name"
        self.later = LaterFields(draft, gpus)  # below the fold: mounted after the first paint
        self.fit_text = ""
        self._body_rows = 24  # the form body's max height (app.tcss); lower on a short terminal
        self.typed_model: tuple[str, str | None, str] = ("", None, "")  # (text, usable path, words) of the last check

    @staticmethod
    def _shown(draft: InstanceDraft) -> dict[str, str]:
        """What each text field shows for a draft (compose draws it; a late draft compares with it)."""
        cfg = draft.config
        return {"name": cfg.name, "port": str(cfg.port), "gpu_layers": str(cfg.gpu_layers), "ctx": str(cfg.ctx),
                "parallel": str(cfg.parallel), "batch_size": str(cfg.batch_size), "threads": str(cfg.threads or ""),
                "command": draft.command, "health": draft.health, "url": draft.url}

    def compose(self) -> ComposeResult:
        self._drawn = True
        shown = self._shown(self.draft)
        title = f"Edit instance {self.original_name}" if self.original_name else "New instance"
        with Vertical(classes="dialog wide"):
            yield Static(f"[b]{gauges.plain(title)}[/]  [$text-muted]ctrl+s save · esc cancel[/]")
            with VerticalScroll(id="form-body"):
                yield Label("name")
                yield TextField(shown["name"], id="name", disabled=self.original_name is not None,
                            tooltip="instances cannot be renamed: add a new one instead")
                yield Static("", id="name-msg", classes="field-msg")
                yield Label("kind")
                yield Select(KIND_OPTIONS, value=self.draft.kind, id="kind", allow_blank=False)
                with Vertical(id="command-fields"):
                    yield Label("command ({port} and {model} are filled in; no shell)")
                    yield TextField(shown["command"], id="command",
                                placeholder="koboldcpp --port {port} --model {model}")
                    yield Label("health path (empty: the first known path that answers 200)")
                    yield TextField(shown["health"], placeholder="/health", id="health")
                with Vertical(id="remote-fields"):
                    yield Label("url (another box, or an SSH tunnel's http://127.0.0.1:PORT)")
                    yield TextField(shown["url"], placeholder="http://gpu-box:5001", id="url")
                yield Label("model")
                yield Select([("bundled (Gemma 3 270M)", BUNDLED)], value=BUNDLED, id="model", allow_blank=False)
                yield Static("", id="model-broken", classes="field-msg").set_styles("display: none;")
                yield PathInput(placeholder="or type a path to a .gguf (~/…, /…, ./…; Tab or → completes)",
                                id="model_path", suggester=GgufPathSuggester())
                yield Static("", id="model_path-msg", classes="field-msg").set_styles("display: none;")
                with Horizontal(classes="form-row"):
                    with Vertical():
                        yield Label("port")
                        yield TextField(shown["port"], id="port", type="integer")
                        yield Static("", id="port-msg", classes="field-msg")
                    with Vertical():
                        yield Label("gpu_layers (-1 = all)")
                        yield TextField(shown["gpu_layers"], id="gpu_layers", type="integer")
                        yield Static("", id="fit", classes="field-msg")
                with Horizontal(classes="form-row"):
                    with Vertical():
                        yield Label("ctx")
                        yield TextField(shown["ctx"], id="ctx", type="integer")
                        yield Static("", id="ctx-msg", classes="field-msg")
                    with Vertical():
                        yield Label("parallel slots")
                        yield TextField(shown["parallel"], id="parallel", type="integer")
                        yield Static("", id="parallel-msg", classes="field-msg")
                    with Vertical():
                        yield Label("batch size")
                        yield TextField(shown["batch_size"], id="batch_size", type="integer")
                        yield Static("", id="batch_size-msg", classes="field-msg")
                    with Vertical():
                        yield Label("threads (blank = auto)")
                        yield TextField(shown["threads"], id="threads", type="integer", placeholder="auto")
                        yield Static("", id="threads-msg", classes="field-msg")
                yield Lazy(self.later)
            yield Static("", id="form-errors")
            with Horizontal(classes="buttons"):
                yield Button("Save (ctrl+s)", id="save", variant="primary")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self._show_kind_fields()  # also checks the port
        cached = getattr(self.app, "catalog_models", None)
        if cached is not None:  # the app keeps the catalogue fresh in a worker: no rescan here
            self._fill_models(list(cached))
        else:
            self._load_catalog()
        self._estimate_fit()
        self._ready = True
        self.call_after_refresh(self._scroll_to_focus)
        if self._early is not None:
            self.draft_arrived(self._early)
        if self._failed is not None:  # close once mounted (a dismiss during mount is lost)
            self.call_later(self.draft_failed, self._failed)

    def on_resize(self) -> None:
        """Keep the whole dialog on screen (title, fields, errors, buttons): the fields scroll
        inside it, so on 24 rows the focused field is never below the bottom edge."""
        errors = self.query_one("#form-errors", Static)
        room = max(5, min(24, self.size.height - 7 - (errors.size.height if errors.display else 0)))
        if room != self._body_rows:  # unchanged (24 on a tall terminal): no relayout at all
            self._body_rows = room
            self.query_one("#form-body", VerticalScroll).styles.max_height = room

    def _scroll_to_focus(self) -> None:
        """Start at the top, just far enough down to show the focused field (focus set before layout may overshoot)."""
        self.query_one("#form-body", VerticalScroll).scroll_home(animate=False)
        if self.focused is not None:
            self.focused.scroll_visible(animate=False)

    @work(thread=True, exclusive=True, group="form-catalog", exit_on_error=False)
    def _load_catalog(self) -> None:
        try:
            models = self.backend.catalog()
        except Exception as exc:  # noqa: BLE001 - the form still works with the bundled model
            self.app.call_from_thread(self.notify, f"could not list models: {gauges.plain(exc)}",
                                      severity="warning")
            models = []
        self.from_thread(self._fill_models, models)

    def _fill_models(self, models: list[CatalogModel]) -> None:
        self._catalog = models
        select = self.query_one("#model", Select)
        options = [("bundled (Gemma 3 270M)", BUNDLED)]
        options += [(f"{m.name} · {m.size_bytes / 2**30:.1f} GiB {m.quant}".strip(), m.path) for m in models
                    if m.path != BUNDLED and m.error is None]
        current = self.draft.config.model or BUNDLED
        if current not in {v for _, v in options}:
            options.append((current.rsplit("/", 1)[-1], current))
        select.set_options(options)
        select.value = current
        broken = [m for m in models if m.error is not None]  # listed with why, never pickable
        lines = [f"✗ {gauges.plain(m.name)}: {gauges.plain(m.error)}" for m in broken[:3]]
        if len(broken) > 3:
            lines.append(f"… and {len(broken) - 3} more broken (the model picker, m, lists them all)")
        listed = self.query_one("#model-broken", Static)
        listed.update("[$warning]" + "\n".join(lines) + "[/]" if lines else "")
        listed.display = bool(lines)

    # a model typed as a path -------------------------------------------------------
    @on(Input.Changed, "#model_path")
    def _model_path_changed(self, event: Input.Changed) -> None:
        text = event.value.strip()
        if not text:
            self.typed_model = ("", None, "")
            msg = self.query_one("#model_path-msg", Static)
            msg.update("")
            msg.display = False
            self._estimate_fit()
            return
        self._check_model_path(text)

    @work(thread=True, exclusive=True, group="form-model-path", exit_on_error=False)
    def _check_model_path(self, text: str) -> None:
        path, words = check_model_path(text, Path.cwd())
        self.from_thread(self._show_model_path, text, path, words)

    def _show_model_path(self, text: str, path: str | None, words: str) -> None:
        self.typed_model = (text, path, words)
        msg = self.query_one("#model_path-msg", Static)
        msg.update(f"[$success]✓ {gauges.plain(words)}[/]" if path else f"[$error]{gauges.plain(words)}[/]")
        msg.display = True
        self._estimate_fit()

    def _model(self) -> tuple[str | None, str | None]:
        """(the model the form describes: a typed path over the list's pick, a problem with the typed path)."""
        text = self.query_one("#model_path", Input).value.strip()
        if text:
            checked, path, words = self.typed_model
            if checked != text:  # saved before the check came back: check now
                path, words = check_model_path(text, Path.cwd())
                self.typed_model = (text, path, words)
            return (path, None) if path else (None, words)
        value = self.query_one("#model", Select).value
        return (None if value in (BUNDLED, Select.BLANK) else str(value)), None

    # the backend's draft, arriving after the form opened ----------------------------
    def draft_arrived(self, draft: InstanceDraft) -> None:
        """Fill every field that still shows the guess; what the person typed meanwhile stays."""
        if self._drawn and not self._ready:  # built from the guess, not mounted yet: on_mount applies it
            self._early = draft
            return
        old, self.draft = self.draft, draft
        self.draft_pending = False
        self.later.arrived(old, draft)
        if self._drawn:  # update the fields in place (focus stays where it is)
            before, after = self._shown(old), self._shown(draft)
            for key, value in after.items():
                field = self.query_one(f"#{key}", Input)
                if field.value == before[key] and value != before[key]:
                    field.value = value
            kind = self.query_one("#kind", Select)
            if kind.value == old.kind and draft.kind != old.kind:
                kind.value = draft.kind
            model = self.query_one("#model", Select)
            if self._catalog is not None and model.value == (old.config.model or BUNDLED):
                self._fill_models(self._catalog)
        if self._save_when_ready:
            self._save_when_ready = False
            self.call_after_refresh(self.action_save)

    def draft_failed(self, reason: str) -> None:
        """The stored settings could not be read: say why and close (nothing to edit safely)."""
        if not self._ready:
            self._failed = reason
            return
        self.notify(reason, title="Cannot open the form", severity="error", timeout=10, markup=False)
        self.dismiss(None)

    # live checks -------------------------------------------------------------------
    def _kind(self) -> str:
        value = self.query_one("#kind", Select).value
        return str(value) if value is not Select.BLANK else "serve"

    @on(Select.Changed, "#kind")
    def _show_kind_fields(self) -> None:
        """Only the fields of the chosen kind: a command line, or a URL."""
        kind = self._kind()
        self.query_one("#command-fields").display = kind == "command"
        self.query_one("#remote-fields").display = kind == "remote"
        self._check_port()

    @on(Input.Changed, "#port")
    def _port_changed(self) -> None:
        self._check_port()

    @on(Input.Changed, "#gpu_layers,#ctx,#parallel")
    @on(Select.Changed, "#model")
    @on(SelectionList.SelectedChanged)
    def _fit_inputs_changed(self) -> None:
        self._estimate_fit()

    def _check_port(self) -> None:
        if self._kind() == "remote":  # the port is the URL's, on another box
            self.port_message = None
            self.port_checked = True
            self.query_one("#port-msg", Static).update("[$text-muted]remote: the URL's port[/]")
            return
        port = as_int(self.query_one("#port", Input).value)
        if port is None or not 1 <= port <= 65535:
            self._show_port("port must be a number in 1-65535")
            return
        self._check_port_free(port)

    @work(thread=True, exclusive=True, group="form-port", exit_on_error=False)
    def _check_port_free(self, port: int) -> None:
        try:
            problem = self.backend.port_problem(port, self.original_name)
        except Exception as exc:  # noqa: BLE001 - shown under the field, never raised
            problem = f"could not check the port: {exc}"
        self.from_thread(self._show_port, problem)

    def _show_port(self, problem: str | None) -> None:
        self.port_message = problem
        self.port_checked = True
        msg = self.query_one("#port-msg", Static)
        msg.update(f"[$error]{gauges.plain(problem)}[/]" if problem else "[$success]free[/]")

    def _selected_gpus(self) -> tuple[str, ...]:
        return self.later.selected_gpus()

    def _estimate_fit(self) -> None:
        layers = as_int(self.query_one("#gpu_layers", Input).value) or 0
        ctx = as_int(self.query_one("#ctx", Input).value) or 0
        parallel = as_int(self.query_one("#parallel", Input).value) or 1
        text = self.query_one("#model_path", Input).value.strip()
        if text and self.typed_model[0] == text and self.typed_model[1]:
            model: str | None = self.typed_model[1]
        else:
            picked = self.query_one("#model", Select).value
            model = str(picked) if picked is not Select.BLANK else None
        self._run_fit(model, layers, ctx, parallel, self._selected_gpus())

    @work(thread=True, exclusive=True, group="form-fit", exit_on_error=False)
    def _run_fit(self, model: str | None, layers: int, ctx: int, parallel: int, gpus: tuple[str, ...]) -> None:
        if not gpus or layers == 0:
            text = "[$text-muted]CPU only: no VRAM needed (gpu_layers 0 or no GPU ticked)[/]"
        else:
            try:
                est = self.backend.fit_estimate(model, layers, ctx, parallel, gpus)
            except Exception as exc:  # noqa: BLE001 - e.g. an unreadable GGUF: say so, keep the form
                text = f"[$warning]no VRAM estimate: {gauges.plain(exc)}[/]"
            else:
                var = "$success" if est.fits else "$error"
                text = f"[{var}]{gauges.plain(est.text)}[/]"
        self.from_thread(self._show_fit, text)

    def _show_fit(self, text: str) -> None:
        self.fit_text = text
        self.query_one("#fit", Static).update(text)

    # save ---------------------------------------------------------------------------
    def build_draft(self) -> tuple[InstanceDraft, list[str]]:
        """The draft the fields describe, and every problem in words."""
        problems: list[str] = []
        values = {k: self.query_one(f"#{k}", Input).value for k in
                  ("name", "port", "gpu_layers", "ctx", "parallel", "batch_size", "threads")}
        values.update({k: str(self.later.value(k)) for k in ("horde_name", "horde_key", "horde_window", "horde_url")})
        name = values["name"].strip()
        if not NAME_RE.match(name):
            problems.append("name: use 1-40 letters, digits, '.', '_' or '-', starting with a letter or digit")
        elif name in self.existing_names:
            problems.append(f"name: an instance called {name!r} exists already; pick another name")
        numbers = {}
        for key in ("port", "gpu_layers", "ctx", "parallel", "batch_size"):
            number = as_int(values[key])
            if number is None:
                problems.append(f"{key}: {values[key]!r} is not a whole number")
                number = getattr(self.draft.config, key)
            numbers[key] = number
        threads: int | None = None
        if values["threads"].strip():
            threads = as_int(values["threads"])
            if threads is None or threads < 1:
                problems.append(f"threads: {values['threads']!r} must be a whole number of at least 1 (blank = auto)")
                threads = self.draft.config.threads
        url = values["horde_url"].strip() or HordeSettings().url
        if not url.startswith(("http://", "https://")):
            problems.append(f"Horde URL: {url!r} must start with https:// (or http://)")
        if numbers["gpu_layers"] < -1:
            problems.append("gpu_layers: use -1 (all layers), 0 (CPU) or a layer count")
        window = as_float(values["horde_window"])
        if window is None:
            problems.append(f"Horde window: {values['horde_window']!r} is not a number of seconds")
            window = self.draft.config.horde.window_s
        model, model_problem = self._model()
        if model_problem:
            problems.append(model_problem)
        horde = replace(
            self.draft.config.horde or HordeSettings(),
            enabled=bool(self.later.value("horde_enabled")),
            worker_name=values["horde_name"].strip(),
            api_key=values["horde_key"].strip(),
            window_s=window,
            url=url,
        )
        config = replace(
            self.draft.config,
            name=name or self.draft.config.name,
            model=model,
            horde=horde,
            threads=threads,
            **numbers,
        )
        problems += [panel_words(p) for p in config.validate() if not (p.startswith("port") and self.port_message)]
        kind = self._kind()
        command, health, url = (self.query_one(f"#{k}", Input).value.strip()
                                for k in ("command", "health", "url"))
        problems += kind_problems(kind, command, health, url)
        if self.port_message and kind != "remote":
            problems.append(f"port: {self.port_message}")
        draft = replace(self.draft, config=config, gpu_uuids=self._selected_gpus(), kind=kind,
                        command=command if kind == "command" else "",
                        health=health if kind == "command" else "",
                        url=url if kind == "remote" else "",
                        auto_restart=bool(self.later.value("auto_restart")),
                        autostart=bool(self.later.value("autostart")))
        return draft, list(dict.fromkeys(problems))

    def action_save(self) -> None:
        if self.draft_pending:  # never store the guess: save once the backend's draft is in
            self._save_when_ready = True
            self.query_one("#form-errors", Static).update("[$text-muted]reading the settings… saving then[/]")
            return
        draft, problems = self.build_draft()
        self._show_problems(problems)
        if not problems:
            self.dismiss(draft)

    def _show_problems(self, problems: list[str]) -> None:
        """Each problem under its field (and all of them under the form, so none is scrolled away)."""
        by_field: dict[str, list[str]] = {}
        for problem in problems:
            field = field_of(problem)
            if field in FIELDS_WITH_MESSAGES:
                by_field.setdefault(field, []).append(problem)
        for field in FIELDS_WITH_MESSAGES:
            text = "\n".join(gauges.plain(p) for p in by_field.get(field, []))
            if field == "model_path" and not text:  # keeps its own check's words (✓ or why)
                continue
            if field == "model_path":
                self.query_one("#model_path-msg", Static).display = True
            for msg in self.query(f"#{field}-msg").results(Static):  # none yet for fields not mounted
                msg.update(f"[$error]{text}[/]" if text else "")
        errors = self.query_one("#form-errors", Static)
        errors.update("[$error]" + "\n".join(gauges.plain(p) for p in problems) + "[/]" if problems else "")
        self.call_after_refresh(self.on_resize)  # the fields give the errors room: the buttons stay on screen

    def action_cancel(self) -> None:
        self.dismiss(None)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.action_save()
        else:
            self.action_cancel()
