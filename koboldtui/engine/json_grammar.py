"""GBNF grammars that make the model write JSON, from llama-cpp-python's own converter, bounded.

OpenAI's ``response_format`` (``json_object`` / ``json_schema``) and KoboldCpp's
``/api/extra/json_to_grammar`` turn a client's JSON schema into a grammar with
llama-cpp-python's ``llama_grammar`` converter (a port of llama.cpp's
``json_schema_to_grammar``). A schema is untrusted input to that converter and, through
it, to llama.cpp's parser, so:

- ``check_schema`` walks it first (no recursion): the keywords the converter reads must
  have the right shape, ``$ref`` must point inside the schema, and what expands
  (``minLength``/``maxLength``, ``minItems``/``maxItems``, ``{m,n}`` in a ``pattern``) must
  stay under llama.cpp's repetition cap — a 220-byte ``{"minLength": 100000000}`` is
  refused before anything is built (it cost ~950 MB and 3 s of the event loop);
- repetitions are written as GBNF ``{m,n}`` (llama.cpp's newer converter does the same)
  instead of the bundled converter's nested ``(a (a (a ...)?)?)?`` (20,000 deep overflowed
  llama.cpp's parser stack), and literals escape backslashes (the bundled converter
  did not: a property name with a quote broke the grammar);
- an unanchored ``pattern`` (JSON Schema searches, it does not match whole) is enforced
  anchored: every string the model then writes matches the whole pattern, so it also
  contains a match — the schema holds;
- the grammar made passes ``check_grammar``; any failure is a SchemaError that talks
  about the schema, never dumps the grammar;
- ``schema_grammar`` runs the conversion in a worker thread with a deadline.

Lives in engine/ because it imports llama_cpp.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import json
import re
from typing import Any

from llama_cpp import llama_grammar
from llama_cpp.llama_grammar import JSON_GBNF

from koboldtui.engine.grammar_limits import MAX_REPETITION_THRESHOLD, GrammarError, check_grammar
from koboldtui.engine.types import EngineError

MAX_SCHEMA_DEPTH = 64  # objects and lists nested in the schema
MAX_SCHEMA_NODES = 10_000  # objects, lists and values in the schema
MAX_PROPERTIES = 256  # properties of one object (the converter recurses once per optional one)
MAX_STRING_LENGTH = MAX_REPETITION_THRESHOLD  # minLength / maxLength: char{m,n}
MAX_ITEMS = 1_000  # minItems / maxItems: the separator form costs llama.cpp a few rules more
MAX_PATTERN_CHARS = 4_096
CONVERT_DEADLINE_S = 10.0
SCHEMA_TYPES = ("string", "number", "integer", "boolean", "object", "array", "null")
_QUANTIFIER = re.compile(r"\{\s*(\d*)\s*(?:,\s*(\d*)\s*)?\}")


class SchemaError(EngineError):
    """The JSON schema cannot be turned into a grammar (400: the client sent it)."""


def json_object_grammar() -> str:
    """Any JSON object (llama.cpp's grammars/json.gbnf)."""
    return JSON_GBNF


# ---------------------------------------------------------------------------- the converter's fixes
def _native_repetition(item_rule: str, min_items: int, max_items: int | None, separator_rule: str | None = None,
                       item_rule_is_literal: bool = False) -> str:
    """llama.cpp's build_repetition: ``item{m,n}`` for llama.cpp's parser to expand, never a
    nested text that grows with the count (its signature is the bundled converter's)."""
    del item_rule_is_literal  # a literal is repeated like any item
    if max_items == 0:
        return ""
    if min_items == 0 and max_items == 1:
        return f"{item_rule}?"
    if not separator_rule:
        if min_items == 1 and max_items is None:
            return f"{item_rule}+"
        if min_items == 0 and max_items is None:
            return f"{item_rule}*"
        return f"{item_rule}{{{min_items},{'' if max_items is None else max_items}}}"
    rest = _native_repetition(f"({separator_rule} {item_rule})", max(min_items - 1, 0),
                              None if max_items is None else max_items - 1)
    result = f"{item_rule} {rest}".rstrip()
    return f"({result})?" if min_items == 0 else result


llama_grammar._build_repetition = _native_repetition  # type: ignore[attr-defined]
llama_grammar.GRAMMAR_LITERAL_ESCAPE_RE = re.compile(r'[\r\n"\\]')  # type: ignore[attr-defined]
llama_grammar.GRAMMAR_LITERAL_ESCAPES = {  # type: ignore[attr-defined]
    "\r": "\\r", "\n": "\\n", '"': '\\"', "\\": "\\\\"}


# ---------------------------------------------------------------------------- the schema's checks
def _at(path: str) -> str:
    return f"at {path or '/'} of the schema"


def _count(node: dict[str, Any], key: str, path: str, limit: int) -> int | None:
    value = node.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SchemaError(f"'{key}' {_at(path)} must be a non-negative integer, got {json.dumps(value)[:40]}")
    if value > limit:
        raise SchemaError(f"'{key}' {_at(path)} is {value}; at most {limit} can be enforced with a grammar: "
                          f"lower it, or leave it out and bound the answer with max_tokens")
    return value


def _pattern(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise SchemaError(f"'pattern' {_at(path)} must be a string")
    if len(value) > MAX_PATTERN_CHARS:
        raise SchemaError(f"'pattern' {_at(path)} is {len(value)} characters; at most {MAX_PATTERN_CHARS}")
    for match in _QUANTIFIER.finditer(value):
        for digits in match.groups():
            if digits and (len(digits) > 9 or int(digits) > MAX_REPETITION_THRESHOLD):
                raise SchemaError(f"'pattern' {_at(path)} repeats {match.group(0)[:24]}; at most "
                                  f"{MAX_REPETITION_THRESHOLD} repetitions can be enforced with a grammar")
    if "(?" in value:
        raise SchemaError(f"'pattern' {_at(path)} uses '(?' (lookaround, non-capturing or named groups), which "
                          "cannot be enforced with a grammar: use plain groups")
    body = value[1:] if value.startswith("^") else value
    body = body[:-1] if body.endswith("$") and not body.endswith("\\$") else body
    return f"^({body})$" if body != value[1:-1] or not value.startswith("^") else value


def _resolve(root: dict[str, Any], ref: Any, path: str) -> dict[str, Any]:
    if not isinstance(ref, str):
        raise SchemaError(f"'$ref' {_at(path)} must be a string such as '#/$defs/name'")
    if not ref.startswith("#/"):
        raise SchemaError(f"'$ref' {ref[:80]!r} {_at(path)} is not supported: only references inside the "
                          "schema ('#/$defs/name') are, remote ones are never fetched")
    target: Any = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(target, dict) or part not in target:
            raise SchemaError(f"'$ref' {ref[:80]!r} {_at(path)} points to nothing: the schema has no "
                              f"{part[:40]!r} there")
        target = target[part]
    if not isinstance(target, dict):
        raise SchemaError(f"'$ref' {ref[:80]!r} {_at(path)} points to a {type(target).__name__}, not a schema")
    return target


def check_schema(schema: Any) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The schema the converter may take (unanchored patterns anchored, local ``$ref``s
    resolved into the second value), or SchemaError saying where and why not. Walks it with
    an explicit stack: no RecursionError."""
    if not isinstance(schema, dict):
        raise SchemaError("the JSON schema must be an object, e.g. {\"type\": \"object\", \"properties\": {...}}")
    _within_depth(schema)
    schema = copy.deepcopy(schema)  # patterns are anchored in the copy, never in the client's body
    nodes = 0
    refs: dict[str, dict[str, Any]] = {}
    stack: list[tuple[Any, str, int, bool]] = [(schema, "", 0, True)]
    while stack:
        node, path, depth, is_schema = stack.pop()
        nodes += 1
        if nodes > MAX_SCHEMA_NODES:
            raise SchemaError(f"the JSON schema has more than {MAX_SCHEMA_NODES} parts; simplify it")
        if depth > MAX_SCHEMA_DEPTH:
            raise SchemaError(f"the JSON schema nests more than {MAX_SCHEMA_DEPTH} deep ({_at(path)[3:]})")
        if isinstance(node, list):
            stack.extend((v, f"{path}/{i}", depth + 1, False) for i, v in enumerate(node))
            continue
        if not isinstance(node, dict):
            continue
        if not is_schema:
            stack.extend((v, f"{path}/{k}", depth + 1, False) for k, v in node.items())
            continue
        _check_keywords(schema, node, path, refs)
        for key, value in node.items():
            child = f"{path}/{key}"
            if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
                for name, sub in value.items():
                    if not isinstance(sub, dict):
                        raise SchemaError(f"{_at(child + '/' + name)[3:]}: a schema must be an object ({{}} for "
                                          f"anything), got {json.dumps(sub)[:40]}")
                    stack.append((sub, f"{child}/{name}", depth + 2, True))
            elif key in ("oneOf", "anyOf", "allOf", "prefixItems") or (key == "items" and isinstance(value, list)):
                if not isinstance(value, list) or not value:
                    raise SchemaError(f"'{key}' {_at(path)} must be a non-empty list of schemas")
                for i, sub in enumerate(value):
                    if not isinstance(sub, dict):
                        raise SchemaError(f"'{key}' {_at(path)} holds a {type(sub).__name__}; it must hold schemas")
                    stack.append((sub, f"{child}/{i}", depth + 2, True))
            elif key in ("items", "additionalProperties") and isinstance(value, dict):
                stack.append((value, child, depth + 1, True))
            elif isinstance(value, (dict, list)):
                stack.append((value, child, depth + 1, False))
    return schema, refs


def _within_depth(schema: dict[str, Any]) -> None:
    """Nesting and size first, without recursion (deepcopy and the converter recurse)."""
    nodes, stack = 0, [(schema, 0)]
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if depth > MAX_SCHEMA_DEPTH:
            raise SchemaError(f"the JSON schema nests more than {MAX_SCHEMA_DEPTH} deep; flatten it")
        if nodes > MAX_SCHEMA_NODES:
            raise SchemaError(f"the JSON schema has more than {MAX_SCHEMA_NODES} parts; simplify it")
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))


def _check_keywords(root: dict[str, Any], node: dict[str, Any], path: str,
                    refs: dict[str, dict[str, Any]]) -> None:
    """One schema object: the keywords the converter reads, with the shapes it needs."""
    kind = node.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind is not None else []
    for k in kinds:
        if k not in SCHEMA_TYPES:
            raise SchemaError(f"'type' {_at(path)} is {json.dumps(k)[:40]}, which is not a JSON schema type "
                              f"(one of {', '.join(SCHEMA_TYPES)})")
    if "$ref" in node:
        refs[node["$ref"]] = _resolve(root, node["$ref"], path)
    for i, part in enumerate(node.get("allOf") or []):
        if isinstance(part, dict) and "$ref" in part:
            refs[part["$ref"]] = _resolve(root, part["$ref"], f"{path}/allOf/{i}")
    if "properties" in node:
        props = node["properties"]
        if not isinstance(props, dict):
            raise SchemaError(f"'properties' {_at(path)} must be an object mapping names to schemas")
        if len(props) > MAX_PROPERTIES:
            raise SchemaError(f"'properties' {_at(path)} has {len(props)} entries; at most {MAX_PROPERTIES}")
    required = node.get("required")
    if required is not None and (not isinstance(required, list) or not all(isinstance(r, str) for r in required)):
        raise SchemaError(f"'required' {_at(path)} must be a list of property names")
    extra = node.get("additionalProperties")
    if extra is not None and not isinstance(extra, (bool, dict)):
        raise SchemaError(f"'additionalProperties' {_at(path)} must be true, false or a schema")
    if "enum" in node and (not isinstance(node["enum"], list) or not node["enum"]):
        raise SchemaError(f"'enum' {_at(path)} must be a non-empty list of values")
    if "items" in node and not isinstance(node["items"], (dict, list)):
        raise SchemaError(f"'items' {_at(path)} must be a schema")
    if "format" in node and not isinstance(node["format"], str):
        raise SchemaError(f"'format' {_at(path)} must be a string")
    lo_len = _count(node, "minLength", path, MAX_STRING_LENGTH)
    hi_len = _count(node, "maxLength", path, MAX_STRING_LENGTH)
    lo_items = _count(node, "minItems", path, MAX_ITEMS)
    hi_items = _count(node, "maxItems", path, MAX_ITEMS)
    for lo, hi, what in ((lo_len, hi_len, "Length"), (lo_items, hi_items, "Items")):
        if lo is not None and hi is not None and hi < lo:
            raise SchemaError(f"'max{what}' {hi} {_at(path)} is below 'min{what}' {lo}: no value can match")
    if "pattern" in node:
        node["pattern"] = _pattern(node["pattern"], path)


# ---------------------------------------------------------------------------- conversion
def json_schema_grammar(schema: Any) -> str:
    """A grammar accepting exactly the JSON documents ``schema`` describes (blocking: call it
    through ``schema_grammar``, off the event loop)."""
    checked, refs = check_schema(schema)
    converter = llama_grammar.SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    converter._refs = dict(refs)  # resolved here: its resolve_refs skips the siblings of a $ref ($defs)
    try:
        converter.visit(checked, "")
        grammar = converter.format_grammar()
    except RecursionError:
        raise SchemaError("the JSON schema nests too deeply (or its $refs chain too long) to turn into a "
                          "grammar") from None
    except AssertionError as exc:  # the converter's "unsupported" checks
        raise SchemaError(f"the JSON schema cannot be enforced: {_short(exc)}") from None
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:  # the converter's other errors
        raise SchemaError(f"the JSON schema cannot be enforced: {_short(exc) or type(exc).__name__} (remote $ref "
                          "and some keywords are not supported)") from None
    try:
        check_grammar(grammar)
    except GrammarError as exc:
        reason = str(exc).removeprefix("the grammar ")
        hint = (" (a 'pattern' may use only what GBNF can say: no \\d, \\w or \\s classes; escapes only "
                "\\\\ \\\" \\n \\t \\r \\xHH \\uHHHH)") if "escape" in reason else ""
        raise SchemaError(f"the JSON schema cannot be enforced: the grammar made from it {reason}{hint}") from None
    return grammar


def _short(exc: BaseException) -> str:
    """The converter's message without the schema it sometimes appends (never dumped back)."""
    text = str(exc).split(": {", 1)[0]
    return text[:200]


_converter = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="schema-grammar")


async def schema_grammar(schema: Any, deadline_s: float = CONVERT_DEADLINE_S) -> str:
    """``json_schema_grammar`` in a worker thread, within ``deadline_s``: the event loop
    keeps answering /health and other clients while a schema converts."""
    future = asyncio.get_running_loop().run_in_executor(_converter, json_schema_grammar, schema)
    try:
        return await asyncio.wait_for(future, deadline_s)
    except TimeoutError:
        raise SchemaError(f"the JSON schema took over {deadline_s:.0f} s to turn into a grammar; simplify it") \
            from None
