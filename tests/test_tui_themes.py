"""Theme files and keymap config: loaded from data, checked, and fine on 256-colour terminals."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.color import Color

from koboldtui.tui.keymap import load_keymap
from koboldtui.tui.themes import ThemeFileError, load_theme_file, load_themes, theme_dirs

SHIPPED = Path(__file__).resolve().parents[1] / "themes"
CUBE = (0, 95, 135, 175, 215, 255)
XTERM_256 = {(r, g, b) for r in CUBE for g in CUBE for b in CUBE} | {(8 + 10 * i,) * 3 for i in range(24)}


def contrast(a: Color, b: Color) -> float:
    la, lb = sorted((a.brightness, b.brightness))
    return (lb + 0.05) / (la + 0.05)


def test_at_least_three_theme_files_load_as_themes() -> None:
    loaded = load_themes([SHIPPED])
    assert not loaded.problems
    names = {t.name for t in loaded.themes}
    assert {"kobold", "kobold-light", "phosphor"} <= names
    assert SHIPPED in theme_dirs()


@pytest.mark.parametrize("path", sorted(SHIPPED.glob("*.toml")), ids=lambda p: p.stem)
def test_theme_colours_are_exact_xterm256_entries_with_readable_text(path: Path) -> None:
    theme = load_theme_file(path)
    colours = {k: getattr(theme, k) for k in ("primary", "secondary", "accent", "success", "warning",
                                              "error", "foreground", "background", "surface", "panel")}
    for key, value in {**colours, **theme.variables}.items():
        if value is None:
            continue
        rgb = Color.parse(value).rgb
        assert rgb in XTERM_256, f"{path.name}: {key} {value} is not an xterm-256 colour (SSH drops truecolor)"
    fg, bg = Color.parse(colours["foreground"]), Color.parse(colours["background"])
    assert contrast(fg, bg) >= 2.0


def test_a_bad_theme_file_is_reported_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "broken.toml").write_text('name = "broken"\n[colors]\nprimary = "not-a-colour"\n')
    (tmp_path / "typo.toml").write_text('name = "typo"\n[colors]\nprimary = "#000000"\nprimery = "#111111"\n')
    (tmp_path / "ok.toml").write_text('name = "ok"\n[colors]\nprimary = "#5f87af"\n')
    loaded = load_themes([tmp_path])
    assert [t.name for t in loaded.themes] == ["ok"]
    assert any("colors.primary" in p and "not a colour" in p for p in loaded.problems)
    assert any("unknown colour keys primery" in p for p in loaded.problems)
    with pytest.raises(ThemeFileError, match="needs at least primary"):
        (tmp_path / "empty.toml").write_text('name = "empty"\n')
        load_theme_file(tmp_path / "empty.toml")


def test_keymap_reads_known_ids_and_reports_the_rest(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[keymap]\nquit = "ctrl+q"\nprompt = ["ctrl+o", "f5"]\nnope = "k"\nhelp = 3\n')
    result = load_keymap(config, {"quit", "prompt", "help"})
    assert result.keymap == {"quit": "ctrl+q", "prompt": "ctrl+o,f5"}
    assert len(result.problems) == 2
    assert load_keymap(tmp_path / "missing.toml", {"quit"}).keymap == {}
    config.write_text("[keymap\n")
    assert "cannot read" in load_keymap(config, {"quit"}).problems[0]


def test_panel_code_reaches_gpus_and_llama_only_through_their_packages() -> None:
    """tui/ never imports pynvml or llama_cpp itself, and colours in TCSS come from theme variables."""
    import ast
    import re

    tui = Path(__file__).resolve().parents[1] / "koboldtui" / "tui"
    for path in tui.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not name.startswith(("pynvml", "llama_cpp")), f"{path.name} imports {name}"
    for tcss in tui.rglob("*.tcss"):
        text = re.sub(r"/\*.*?\*/", "", tcss.read_text(encoding="utf-8"), flags=re.DOTALL)
        assert not re.search(r"#[0-9a-fA-F]{3,8}\b|rgb\(|\b(red|green|blue|white|black|yellow)\b", text), tcss.name


async def test_the_palette_offers_only_our_themes_and_a_screenshot_that_saves() -> None:
    from koboldtui.paths import app_paths
    from tests.test_tui_dashboard import make_app, settle, wait_for

    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        names = set(app.available_themes)
        assert {"kobold", "kobold-light", "phosphor"} <= names
        assert "textual-dark" not in names and "nord" not in names and "dracula" not in names
        shot = next(c for c in app.get_system_commands(app.screen) if c.title == "Screenshot")
        shot.callback()
        await wait_for(pilot, lambda: any("saved" in str(n.message) for n in app._notifications))
        assert list((app_paths().data_dir / "screenshots").glob("*.svg"))
