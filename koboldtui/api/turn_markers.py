"""Stop strings that end a chat turn, so a model that writes the next turn itself is cut there.

A chat prompt ends where the assistant starts; a model that does not stop by itself (a base
model, or one whose end-of-turn token is plain text to it) goes on to write the user's next
line. The markers are read from the rendered prompt: a template family's turn markers, or
the plain "role:" transcript used for models without a template.
"""

from __future__ import annotations

from collections.abc import Iterable

# (a marker seen in the rendered prompt, the stops that mean "this turn is over")
TEMPLATE_MARKERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("<start_of_turn>", ("<end_of_turn>", "<start_of_turn>")),  # Gemma
    ("<|im_start|>", ("<|im_end|>", "<|im_start|>")),  # ChatML (Qwen, SmolLM, ...)
    ("<|start_header_id|>", ("<|eot_id|>", "<|start_header_id|>")),  # Llama 3
    ("[INST]", ("[INST]", "</s>")),  # Mistral / Llama 2
    ("<|user|>", ("<|end|>", "<|user|>", "<|endoftext|>")),  # Phi-3, Zephyr
    ("<|User|>", ("<|end▁of▁sentence|>", "<|User|>")),  # DeepSeek
)
PLAIN_ROLES = ("user", "system", "assistant")


def turn_stops(rendered: str, roles: Iterable[str]) -> tuple[str, ...]:
    """The stop strings for a prompt rendered by engine/chat_template.py."""
    stops = [stop for marker, found in TEMPLATE_MARKERS if marker in rendered for stop in found]
    if rendered.endswith("\nassistant:") or rendered.startswith(tuple(f"{r}:" for r in PLAIN_ROLES)):
        for role in list(dict.fromkeys([*PLAIN_ROLES, *(r for r in roles if 0 < len(r) <= 64)]))[:32]:
            stops += [f"\n{role}:", f"\n{role.capitalize()}:"]
    return tuple(dict.fromkeys(stops))
