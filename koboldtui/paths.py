"""Where koboldtui keeps its files, so every package asks one place instead of guessing.

platformdirs gives the per-OS locations; ``KOBOLDTUI_HOME`` puts everything under one
folder instead (tests point it at a tmp dir so a developer's own data is never touched).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP_NAME = "koboldtui"
HOME_ENV = "KOBOLDTUI_HOME"


@dataclass(frozen=True)
class AppPaths:
    """The folders and files of one koboldtui installation."""

    config_dir: Path
    data_dir: Path
    log_dir: Path

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.toml"

    @property
    def secrets_file(self) -> Path:
        """Horde and API keys, kept apart from the config with mode 0600."""
        return self.config_dir / "secrets.toml"

    @property
    def database(self) -> Path:
        return self.data_dir / "koboldtui.sqlite3"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    def ensure(self) -> AppPaths:
        """Create the folders (idempotent) and return self for chaining."""
        for folder in (self.config_dir, self.data_dir, self.log_dir, self.models_dir):
            folder.mkdir(parents=True, exist_ok=True)
        return self


def app_paths(environ: dict[str, str] | None = None) -> AppPaths:
    """The paths in force: ``KOBOLDTUI_HOME`` if set, else the platform's user dirs."""
    env = os.environ if environ is None else environ
    home = env.get(HOME_ENV)
    if home:
        root = Path(home).expanduser()
        return AppPaths(config_dir=root / "config", data_dir=root / "data", log_dir=root / "logs")
    return AppPaths(
        config_dir=Path(platformdirs.user_config_dir(APP_NAME)),
        data_dir=Path(platformdirs.user_data_dir(APP_NAME)),
        log_dir=Path(platformdirs.user_log_dir(APP_NAME)),
    )
