"""A model typed as a path in the instance form: completion, checks in words, and the save.

Real files in a tmp folder (and the real bundled GGUF, linked in) stand for a person's
model folder; the panel runs on the FakeBackend as the other form tests do.
"""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Input, Static

from koboldtui.tui.backend import CatalogModel
from koboldtui.tui.screens.instance_form import InstanceFormScreen
from koboldtui.tui.screens.model_path import check_model_path, complete_path
from tests.test_tui_dashboard import make_app, settle, wait_for
from tests.test_tui_forms import open_new_form
from tests.tui_fakes import FakeBackend


def model_folder(root: Path, bundled: Path) -> Path:
    """models/ with a real GGUF (linked), a text file, a fake .gguf, a truncated GGUF and a sub-folder."""
    models = root / "models"
    (models / "big").mkdir(parents=True)
    (models / "gemma-small.gguf").symlink_to(bundled)
    (models / "notes.txt").write_text("not a model")
    (models / "fake.gguf").write_bytes(b"PK\x03\x04 a zip, renamed")
    (models / "truncated.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")
    (models / ".hidden.gguf").write_bytes(b"GGUF")
    return models


def test_completion_names_folders_and_ggufs_only(tmp_path: Path, bundled_model: Path, monkeypatch) -> None:
    models = model_folder(tmp_path, bundled_model)
    assert complete_path(f"{models}/g", tmp_path) == f"{models}/gemma-small.gguf"
    assert complete_path(f"{models}/b", tmp_path) == f"{models}/big/"
    assert complete_path(f"{models}/n", tmp_path) is None  # notes.txt is not a model
    assert complete_path(f"{models}/.", tmp_path) == f"{models}/.hidden.gguf"  # hidden only when asked for
    assert complete_path(f"{tmp_path}/mo", tmp_path) == f"{tmp_path}/models/"
    assert complete_path("models/ge", tmp_path) == "models/gemma-small.gguf"  # relative to where the panel runs
    monkeypatch.setenv("HOME", str(tmp_path))
    assert complete_path("~/models/tr", tmp_path) == "~/models/truncated.gguf"  # keeps the ~ as typed
    assert complete_path(f"{tmp_path}/nowhere/x", tmp_path) is None


def test_check_says_why_a_path_cannot_be_used(tmp_path: Path, bundled_model: Path, monkeypatch) -> None:
    models = model_folder(tmp_path, bundled_model)
    path, words = check_model_path("models/gemma-small.gguf", tmp_path)
    assert path == str(models / "gemma-small.gguf") and "GiB" in words
    monkeypatch.setenv("HOME", str(tmp_path))
    assert check_model_path("~/models/gemma-small.gguf", Path("/")) == (path, words)
    for typed, why in (("models/missing.gguf", "does not exist"), ("models/big", "is a folder"),
                       ("models/fake.gguf", "is not a GGUF file"), ("models/truncated.gguf", "is broken")):
        found, words = check_model_path(typed, tmp_path)
        assert found is None and words.startswith("model path:") and why in words, (typed, words)


async def test_typed_path_completes_with_tab_and_is_saved_absolute(tmp_path: Path, bundled_model: Path,
                                                                     monkeypatch) -> None:
    models = model_folder(tmp_path, bundled_model)
    monkeypatch.chdir(tmp_path)
    backend = FakeBackend()
    app = make_app(backend)
    async with app.run_test(size=(120, 40)) as pilot:
        form = await open_new_form(pilot, app)
        field = form.query_one("#model_path", Input)
        field.focus()
        await pilot.press(*"models/ge")
        await wait_for(pilot, lambda: field._suggestion.endswith("gemma-small.gguf"))
        await pilot.press("tab")
        assert field.value == "models/gemma-small.gguf" and field.has_focus
        msg = form.query_one("#model_path-msg", Static)
        await wait_for(pilot, lambda: "✓" in str(msg.render()))
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: any(c[0] == "save_instance" for c in backend.calls))
        saved = backend.drafts[form.draft.config.name]
        assert saved.config.model == str(models / "gemma-small.gguf")


async def test_a_bad_typed_path_is_refused_next_to_the_field(tmp_path: Path, bundled_model: Path,
                                                             monkeypatch) -> None:
    model_folder(tmp_path, bundled_model)
    monkeypatch.chdir(tmp_path)
    backend = FakeBackend()
    app = make_app(backend)
    async with app.run_test(size=(120, 40)) as pilot:
        form = await open_new_form(pilot, app)
        form.query_one("#model_path", Input).value = "models/fake.gguf"
        msg = form.query_one("#model_path-msg", Static)
        await wait_for(pilot, lambda: "not a GGUF file" in str(msg.render()))
        await pilot.press("ctrl+s")
        await pilot.pause(0.1)
        assert app.screen is form and not [c for c in backend.calls if c[0] == "save_instance"]
        assert "not a GGUF file" in str(msg.render())  # still next to its field after the save attempt
        form.query_one("#model_path", Input).value = ""  # back to the list's pick: saves
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: any(c[0] == "save_instance" for c in backend.calls))


async def test_broken_catalogue_models_are_listed_with_their_reason() -> None:
    backend = FakeBackend()
    real = backend.catalog

    def with_broken() -> list[CatalogModel]:
        return real() + [CatalogModel("half-download", "/models/half-download.gguf",
                                      error="cannot read it: file ends inside the header")]

    backend.catalog = with_broken  # type: ignore[method-assign]
    app = make_app(backend)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        await wait_for(pilot, lambda: app.catalog_models is not None)
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, InstanceFormScreen) and app.screen.is_mounted)
        broken = str(app.screen.query_one("#model-broken", Static).render())
        assert "half-download" in broken and "ends inside the header" in broken
        options = [value for _, value in app.screen.query_one("#model")._options]
        assert "/models/half-download.gguf" not in options  # listed, never pickable

