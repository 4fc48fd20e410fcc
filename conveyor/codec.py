"""JSON encoding of arguments and results (msgspec); never pickle."""

from __future__ import annotations

import math
from typing import Any

import msgspec

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


def _encode(value: Any) -> bytes:
    encoded = _encoder.encode(value)
    # msgspec writes NaN and infinities as null; JSON has no such numbers, so refuse them
    # rather than store a silently different value. Only a payload holding a null is walked.
    if b"null" in encoded and _has_non_finite(value):
        raise TypeError("NaN and infinite floats have no JSON form")
    return encoded


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(item) for item in value.values())
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_has_non_finite(item) for item in value)
    return False


def dumps(value: Any) -> str:
    """Encode to a JSON string; raises TypeError naming what could not be encoded."""
    try:
        return _encode(value).decode()
    except (TypeError, msgspec.EncodeError, OverflowError) as exc:
        raise TypeError(f"not JSON-serialisable: {exc}") from None


def loads(text: str | bytes | None) -> Any:
    """Decode a JSON string stored by ``dumps`` (None stays None)."""
    if text is None:
        return None
    return _decoder.decode(text)


def check_payload(task: str, args: Any, kwargs: Any) -> tuple[list[Any], dict[str, Any]]:
    """Validate a call's arguments before anything is stored, with a clear error."""
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise TypeError(f"kwargs of {task!r} must be a dict with str keys, got {kwargs!r}")
    if not isinstance(args, (list, tuple)):  # a str or dict would be silently split into its items
        raise TypeError(f"args of {task!r} must be a list or tuple, got {type(args).__name__} {args!r}")
    args = list(args)
    try:
        _encode(args)
        _encode(kwargs)
    except (TypeError, msgspec.EncodeError, OverflowError) as exc:
        raise TypeError(f"arguments of {task!r} must be JSON-serialisable: {exc}") from None
    return args, kwargs
