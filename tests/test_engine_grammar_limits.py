"""check_grammar (engine/grammar_limits.py) and the bounded schema converter (engine/json_grammar.py).

The checker is a port of llama.cpp's GBNF parser: on grammars small enough to be safe it
must agree with llama.cpp itself (the real parser, through the bundled model's vocab) on
what parses; past the limits it must refuse, naming the limit, before llama.cpp sees it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import llama_cpp
import pytest
from grammar_fuzz import _soup, _structured

from koboldtui.engine.grammar_limits import GrammarError, check_grammar
from koboldtui.engine.json_grammar import JSON_GBNF, SchemaError, json_schema_grammar


@pytest.fixture(scope="module")
def vocab(bundled_model) -> Iterator[Any]:
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(bundled_model).encode(), params)
    yield llama_cpp.llama_model_get_vocab(model)
    llama_cpp.llama_model_free(model)


def llama_parses(vocab: Any, grammar: str) -> bool:
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
    if sampler:
        llama_cpp.llama_sampler_free(sampler)
    return bool(sampler)


def refusal(grammar: str) -> str:
    with pytest.raises(GrammarError) as caught:
        check_grammar(grammar)
    return str(caught.value)


def test_the_checker_agrees_with_llama_cpp_on_small_grammars(vocab) -> None:
    rng = random.Random(5)
    seen = {True: 0, False: 0}
    for _ in range(600):
        grammar = _soup(rng) if rng.random() < 0.5 else "root ::= " + _structured(rng)
        grammar = grammar.encode("utf-16", "surrogatepass").decode("utf-16")  # the pieces' surrogate pair
        # what the checker refuses on purpose although llama.cpp parses it: NUL and control
        # characters (llama.cpp aborts later), repeats over 2000 (llama.cpp makes them unbounded)
        if any(s in grammar for s in ("\x00", "x00", "u0000", "\x01", "{3000}", "9999")):
            continue
        try:
            check_grammar(grammar)
            ours = True
        except GrammarError:
            ours = False
        assert ours == llama_parses(vocab, grammar), grammar
        seen[ours] += 1
    assert seen[True] > 100 and seen[False] > 25


def test_llama_cpp_example_grammars_pass(vocab) -> None:
    for grammar in (JSON_GBNF, 'root ::= "yes" | "no"', 'root ::= [a-z]{0,2000}',
                    'root ::= item+\nitem ::= "- " [^\\n]+ "\\n"  # a list\n',
                    'root ::= ("a" | "b")* "." <[12]> !<[13]>'):
        check_grammar(grammar)
        assert llama_parses(vocab, grammar)


@pytest.mark.parametrize(("grammar", "says"), [
    ("root ::= " + "(" * 20000 + '"a"' + ")" * 20000, "nests groups 20000 deep; at most 256"),
    ('root ::= "\\u0000"', "NUL"),
    ('root ::= "\x00"', "control character U+0000"),
    ("root ::= [\\x00]", "matches only NUL"),
    ('root ::= "' + "x" * 30000 + '"{2000}', "more than 500000 elements"),
    ('root ::= "a"{0,3000}', "repeats an item 3000 times; at most 2000"),
    ('root ::= "a"{' + "9" * 5000 + "}", "at most 2000"),
    ("root ::= r0\n" + "\n".join(f'r{i} ::= r{i + 1} | r{i + 1} "b"' for i in range(16)) + '\nr16 ::= "a"',
     "can begin in more than 512 ways"),
    ("\n".join(f"r{i} ::= r{i + 1}" for i in range(5000)) + '\nr5000 ::= "a"\nroot ::= r0', "chains more than 2000"),
    ('root ::= root "a" | "b"', "left-recursive"),
    ("root ::= foo", "uses rule 'foo' but never defines it"),
    ('r ::= "a"', "no 'root' rule"),
    ("root ::= (", "expects ')'"),
    ("", "empty"),
])
def test_refusals_name_the_limit_and_never_echo_the_grammar(grammar: str, says: str) -> None:
    message = refusal(grammar)
    assert says in message
    assert len(message) < 400


def test_the_checker_is_quick_on_the_biggest_grammar_it_accepts() -> None:
    import time

    grammar = "root ::= " + " ".join(f"r{i}" for i in range(20)) + "\n" + "\n".join(
        f"r{i} ::= [a-z]{{0,2000}}" for i in range(20))
    t0 = time.perf_counter()
    check_grammar(grammar)  # 40,000 rules
    assert time.perf_counter() - t0 < 5


@pytest.mark.parametrize(("schema", "says"), [
    ({"type": "string", "maxLength": 30000}, "'maxLength' at / of the schema is 30000; at most 2000"),
    ({"type": "string", "minLength": 100_000_000}, "'minLength' at / of the schema is 100000000"),
    ({"type": "array", "items": {"type": "string"}, "maxItems": 5000}, "'maxItems'"),
    ({"type": "foo"}, "'type' at / of the schema is \"foo\""),
    ({"$ref": "#/$defs/none"}, "points to nothing"),
    ({"$ref": "https://example.com/s.json"}, "remote ones are never fetched"),
    ({"type": "object", "properties": {"a": {"type": "string", "minLength": "5"}}},
     "'minLength' at /properties/a of the schema must be a non-negative integer"),
    ({"type": "string", "pattern": "^a{0,100000}$"}, "repeats {0,100000}"),
    ({"type": "string", "pattern": "^\\d+$"}, "unknown escape"),
    ({"type": "string", "minLength": 5, "maxLength": 2}, "below 'minLength'"),
])
def test_schema_refusals_talk_about_the_schema(schema: Any, says: str) -> None:
    with pytest.raises(SchemaError) as caught:
        json_schema_grammar(schema)
    assert says in str(caught.value)
    assert "schema" in str(caught.value) and "GBNF syntax" not in str(caught.value)


def test_schema_nested_deeper_than_python_recursion_is_a_schema_error() -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(3000):
        schema = {"type": "array", "items": schema}
    with pytest.raises(SchemaError, match="nests more than 64 deep"):
        json_schema_grammar(schema)


@pytest.mark.parametrize("schema", [
    {"type": "string", "maxLength": 2000},
    {"type": "string", "pattern": "[a-z]+"},
    {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 1000},
    {"type": "object", "properties": {'q"uote': {"type": "string"}, "back\\slash": {"enum": ["a\\", 'b"']},
                                      "nul\x00": {"const": "x\x00"}}, "required": ['q"uote']},
    {"$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}}}}, "$ref": "#/$defs/node"},
])
def test_schemas_make_grammars_llama_cpp_parses(vocab, schema: Any) -> None:
    assert llama_parses(vocab, json_schema_grammar(schema))


def test_the_clients_schema_is_left_as_it_was() -> None:
    schema = {"type": "string", "pattern": "[a-z]+"}
    json_schema_grammar(schema)
    assert schema == {"type": "string", "pattern": "[a-z]+"}


def test_a_grammar_step_over_the_cpu_budget_ends_only_its_request(bundled_model, monkeypatch) -> None:
    """The guard against grammars whose ways to match multiply (measured: such a grammar got
    its 422 after ~2.7 s of CPU in one step, /health answering throughout); here the budget is
    0 so any grammar trips it at once."""
    import httpx

    from koboldtui.config import ServeConfig
    from koboldtui.engine import sampling
    from tests.instance_harness import running_instance

    monkeypatch.setattr(sampling, "GRAMMAR_STEP_BUDGET_S", 0.0)
    with running_instance(ServeConfig(ctx=256, parallel=2), bundled_model) as (base, _):
        r = httpx.post(base + "/api/v1/generate", timeout=60,
                       json={"prompt": "x", "max_length": 2, "grammar": 'root ::= "yes" | "no"'})
        assert r.status_code == 422 and "too ambiguous" in r.json()["error"]
        r = httpx.post(base + "/api/v1/generate", timeout=60, json={"prompt": "x", "max_length": 2})
        assert r.status_code == 200


# Issue 20's stall (bench/fuzz_grammar.py: 24 requests without an answer in 120 s): a valid,
# ambiguous grammar from the fuzz whose one vocabulary filter costs ~3x more per character of
# a token (9-byte tokens 1 s, 13-byte ones 60 s, the whole vocabulary hours) in one llama.cpp
# call; it held the decode thread, and so every slot, until /health called the instance wedged.
AMBIGUOUS = ('root ::= (([0-9] | (([a-z] | [0-9] | " "))* ([a-z] | [a-z]) | (" ")* (([a-z] | "\\u00e9" | "yes") '
             '| "yes" | ("yes" | "yes"))))*')


def test_an_ambiguous_grammar_ends_in_a_422_without_stalling_the_other_slots(bundled_model) -> None:
    import threading
    import time

    import httpx

    from koboldtui.config import ServeConfig
    from tests.instance_harness import running_instance

    with running_instance(ServeConfig(ctx=256, parallel=2), bundled_model) as (base, _):
        answers: dict[str, httpx.Response] = {}

        def grammar_request() -> None:
            answers["grammar"] = httpx.post(base + "/api/v1/generate", timeout=30, json={
                "prompt": "Answer:", "max_length": 1, "temperature": 0, "grammar": AMBIGUOUS})

        sender = threading.Thread(target=grammar_request)
        started = time.monotonic()
        sender.start()
        time.sleep(0.3)
        plain = httpx.post(base + "/api/v1/generate", timeout=30, json={"prompt": "x", "max_length": 2})
        sender.join(35)
        assert plain.status_code == 200
        r = answers["grammar"]
        assert r.status_code == 422 and "too ambiguous" in r.json()["error"]
        assert time.monotonic() - started < 15
