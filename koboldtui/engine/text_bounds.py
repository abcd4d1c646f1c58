"""How long a text can be before it surely does not fit a context, known without tokenizing it.

Tokenizing an 8 MB prompt takes seconds; a prompt that cannot fit is refused (OpenAI) or
cut to its tail (KoboldAI) first. One token stands for at most ``longest_token_bytes``
bytes of text, so ``n_tokens >= len(text.encode()) / longest`` — and the same for
characters, since a character is at least one byte.
"""

from __future__ import annotations

from typing import Any

from koboldtui.engine.engine_config import lower_decode_priority
from koboldtui.engine.native import Vocab
from koboldtui.engine.sampling import longest_token_bytes, token_texts


def token_bytes_bound(engine: Any) -> int | None:
    """Bytes one token may cover at most, for a LlamaEngine (None for other engines).
    The first call reads the whole vocabulary (~0.25 s for 262k tokens): call it off the loop;
    the engine reads it at start (``warm_token_bytes_bound``)."""
    vocab = getattr(engine, "vocab", None)
    return longest_token_bytes(vocab) if vocab is not None else None


def read_token_texts(engine: Any) -> None:
    """Read the vocabulary's texts now (off the loop), so ``banned_tokens`` costs nothing later."""
    vocab = getattr(engine, "vocab", None)
    if vocab is not None:
        token_texts(vocab)


def warm_token_bytes_bound(vocab: Vocab) -> None:
    """Read the longest token now, in a thread of its own at the decode threads' low priority."""
    lower_decode_priority()
    longest_token_bytes(vocab)
