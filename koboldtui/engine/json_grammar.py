"""GBNF grammars that make the model write JSON, from llama-cpp-python's own converter.

OpenAI's ``response_format`` (``json_object`` / ``json_schema``) is enforced with
llama.cpp's grammar sampler; the grammar text comes from llama-cpp-python's
``llama_grammar`` module (the JSON grammar and its JSON-schema → GBNF converter, a port of
llama.cpp's ``json_schema_to_grammar``). Lives in engine/ because it imports llama_cpp.
"""

from __future__ import annotations

import json
from typing import Any

from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

from koboldtui.engine.types import EngineError


class SchemaError(EngineError):
    """The JSON schema cannot be turned into a grammar (400: the client sent it)."""


def json_object_grammar() -> str:
    """Any JSON object (llama.cpp's grammars/json.gbnf)."""
    return JSON_GBNF


def json_schema_grammar(schema: dict[str, Any]) -> str:
    """A grammar accepting exactly the JSON documents ``schema`` describes."""
    try:
        return json_schema_to_gbnf(json.dumps(schema))
    except RecursionError:
        raise SchemaError("the JSON schema nests too deeply to turn into a grammar") from None
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:  # the converter's errors
        raise SchemaError(f"the JSON schema cannot be enforced: {exc or type(exc).__name__} "
                          "(remote $ref and some keywords are not supported)") from None
