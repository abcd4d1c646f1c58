"""Themes are data: ``themes/*.toml`` files become Textual ``Theme`` objects at start.

Keeping colours in files (not code) lets users add or tweak a theme without touching
Python, and one loader validates them all with messages that say what to fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tomllib
from textual.color import Color, ColorParseError
from textual.theme import Theme

from koboldtui.paths import AppPaths

DEFAULT_THEME = "kobold"
COLOR_KEYS = (
    "primary",
    "secondary",
    "accent",
    "success",
    "warning",
    "error",
    "foreground",
    "background",
    "surface",
    "panel",
    "boost",
)


class ThemeFileError(ValueError):
    """A theme file that cannot be used, with the file and the field at fault."""


@dataclass(frozen=True)
class LoadedThemes:
    """The themes found, plus one problem line per file that was skipped."""

    themes: tuple[Theme, ...]
    problems: tuple[str, ...]


def theme_dirs(paths: AppPaths | None = None) -> list[Path]:
    """Where theme files live: the shipped ``themes/`` folder, then the user's own."""
    here = Path(__file__).resolve()
    dirs = [here.parents[2] / "themes", here.parents[1] / "_themes"]
    if paths is not None:
        dirs.append(paths.config_dir / "themes")
    return [d for d in dirs if d.is_dir()]


def _color(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ThemeFileError(f"{where} must be a colour string like \"#d7875f\"")
    try:
        Color.parse(value)
    except ColorParseError as exc:
        raise ThemeFileError(f"{where} = {value!r} is not a colour: {exc}") from exc
    return value


def load_theme_file(path: Path) -> Theme:
    """Parse one theme TOML file; raise ``ThemeFileError`` saying what is wrong."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ThemeFileError(f"{path}: cannot read theme: {exc}") from exc
    name = data.get("name") or path.stem
    if not isinstance(name, str):
        raise ThemeFileError(f"{path}: name must be a string")
    colors = data.get("colors", {})
    if not isinstance(colors, dict):
        raise ThemeFileError(f"{path}: [colors] must be a table")
    unknown = sorted(set(colors) - set(COLOR_KEYS))
    if unknown:
        raise ThemeFileError(
            f"{path}: unknown colour keys {', '.join(unknown)}; use {', '.join(COLOR_KEYS)}"
        )
    if "primary" not in colors:
        raise ThemeFileError(f"{path}: [colors] needs at least primary = \"#rrggbb\"")
    kwargs = {key: _color(value, f"{path}: colors.{key}") for key, value in colors.items()}
    variables = data.get("variables", {})
    if not isinstance(variables, dict):
        raise ThemeFileError(f"{path}: [variables] must be a table")
    clean_vars = {str(k): _color(v, f"{path}: variables.{k}") for k, v in variables.items()}
    dark = data.get("dark", True)
    if not isinstance(dark, bool):
        raise ThemeFileError(f"{path}: dark must be true or false")
    return Theme(name=name, dark=dark, variables=clean_vars, **kwargs)


def load_themes(dirs: list[Path]) -> LoadedThemes:
    """Load every ``*.toml`` in ``dirs``; later folders override earlier ones by name."""
    themes: dict[str, Theme] = {}
    problems: list[str] = []
    for folder in dirs:
        for path in sorted(folder.glob("*.toml")):
            try:
                theme = load_theme_file(path)
            except ThemeFileError as exc:
                problems.append(str(exc))
                continue
            themes[theme.name] = theme
    return LoadedThemes(themes=tuple(themes.values()), problems=tuple(problems))
