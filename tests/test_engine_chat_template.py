"""Chat prompts: llama.cpp's renderer for known templates, Jinja for the rest, plain text last."""

from __future__ import annotations

from koboldtui.engine.chat_template import plain_transcript, render_chat, render_jinja

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]

# A template llama.cpp's heuristics would not know, in the shape Hugging Face ships them.
CUSTOM = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] not in ['system', 'user', 'assistant'] %}{{ raise_exception('bad role') }}{% endif %}"
    "[{{ m['role'] | upper }}] {{ m['content'] }}{{ eos_token }}\n"
    "{% endfor %}{% if add_generation_prompt %}[ASSISTANT] {% endif %}"
)


def never(template, messages):
    return None


def test_unknown_template_is_rendered_as_jinja_without_a_second_bos():
    text = render_chat(CUSTOM, MESSAGES, builtin=never, eos_token="</s>")
    assert text == "[SYSTEM] Be brief.</s>\n[USER] Hi</s>\n[ASSISTANT] "


def test_builtin_renderer_wins_when_it_knows_the_template():
    text = render_chat(CUSTOM, MESSAGES, builtin=lambda t, m: "BUILTIN", eos_token="</s>")
    assert text == "BUILTIN"


def test_a_template_that_raises_falls_back_to_plain_text():
    bad = [{"role": "tool", "content": "x"}]
    assert render_jinja(CUSTOM, bad) is None
    assert render_chat(CUSTOM, bad, builtin=never) == plain_transcript(bad) == "tool: x\nassistant:"


def test_sandbox_refuses_unsafe_templates():
    assert render_jinja("{{ ''.__class__.__mro__[1].__subclasses__() }}", MESSAGES) is None


def test_no_template_gives_a_plain_transcript():
    assert render_chat(None, MESSAGES, builtin=never).endswith("user: Hi\nassistant:")
