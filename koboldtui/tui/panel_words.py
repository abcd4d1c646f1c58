"""Messages from the CLI-facing layers, reworded for the panel: fields and keys, not flags.

The supervisor, config checks and the Horde worker speak to ``koboldtui`` command lines
("pass --horde-key", "POST /api/koboldtui/horde/maintenance"); in the panel the same
advice must name the form field or the key that does it.
"""

from __future__ import annotations

import re

# (pattern, replacement), applied in order; the longest phrases first.
REWRITES: tuple[tuple[str, str], ...] = (
    (r"restart it with --horde --horde-name \S+\s+and the key in KOBOLDTUI_HORDE_KEY( \(or --horde-key\))?",
     "switch the Horde worker on in the form (e), with a worker name and the Horde API key"),
    (r"`?koboldtui instance edit \S+ --cmd \"[^\"]*\"`?", "the command field of the form (e)"),
    (r"`?koboldtui instance edit \S+ --port \S+`?", "the port field of the form (e)"),
    (r"`?koboldtui instance edit \S+ \.\.\.`?", "the form (e)"),
    (r"pass --horde-name NAME", "fill in the worker name field of the form (e)"),
    (r"check --horde-key \(or KOBOLDTUI_HORDE_KEY\)", "check the Horde API key field of the form (e)"),
    (r"re-enter it \(--horde-key or KOBOLDTUI_HORDE_KEY\)", "re-enter it in the Horde API key field (e)"),
    (r"pass your own key with --horde-key", "fill in your own key in the Horde API key field (e)"),
    (r"pick another name with --horde-name", "pick another name in the worker name field (e)"),
    (r"pick one in 1-65535 with --port", "pick one in 1-65535 in the port field (e)"),
    (r'needs --cmd "[^"]*"', "needs a command line with {port} in the command field (e)"),
    (r"--cmd", "the command field (e)"),
    (r"run on the CPU \(--cpu\)", "run it on the CPU (untick every GPU in the form, e)"),
    (r"--cpu\b", "every GPU unticked in the form (e)"),
    (r"pass --horde-key \(or KOBOLDTUI_HORDE_KEY\)", "fill in the Horde API key field of the form (e)"),
    (r"KOBOLDTUI_HORDE_KEY \(or --horde-key\)", "the Horde API key field of the form (e)"),
    (r"POST /api/koboldtui/horde/maintenance \{\"on\": false\}", "Z on the dashboard"),
    (r"\(POST /api/koboldtui/horde/maintenance[^)]*\)", "(Z on the dashboard)"),
    (r"`?koboldtui instance edit \S+ --autostart`?", "the autostart switch of the form (e)"),
    (r"fewer --gpu-layers", "fewer GPU layers (gpu_layers in the form, e)"),
    (r"a smaller --ctx", "a smaller context (ctx in the form, e)"),
    (r"--horde-key", "the Horde API key field (e)"),
    (r"--horde-name", "the worker name field (e)"),
    (r"--horde-window", "the Horde window field (e)"),
    (r"--horde-url", "the Horde URL field (e)"),
    (r"--horde\b", "the Horde worker switch (e)"),
    (r"--gpu-layers", "the gpu_layers field (e)"),
    (r"--batch-size", "the batch size (b)"),
    (r"--parallel", "parallel slots (e)"),
    (r"--port", "the port field (e)"),
    (r"--ctx", "the ctx field (e)"),
    (r"--gpus", "the GPU list of the form (e)"),
    (r"--threads", "the threads field (e)"),
    (r"--model", "the model (m)"),
    (r"--max-queue", "the max queue setting (CLI: koboldtui instance edit)"),
    (r"--restart", "the restart setting (e)"),
    (r"--api-key", "the API key field (e)"),
    (r"KOBOLDTUI_HORDE_KEY", "the Horde API key field (e)"),
)
_COMPILED = tuple((re.compile(p), r) for p, r in REWRITES)


def panel_words(text: str) -> str:
    """``text`` with CLI flags and raw API calls replaced by the panel's fields and keys."""
    for pattern, replacement in _COMPILED:
        text = pattern.sub(replacement, text)
    return text
