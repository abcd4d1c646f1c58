"""koboldtui: a terminal control panel for local LLMs that lends idle capacity to the AI Horde."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("koboldtui")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+source"

PROJECT_URL = "https://github.com/koboldtui/koboldtui"

__all__ = ["PROJECT_URL", "__version__"]
