"""JSON encoding of arguments and results (msgspec); never pickle."""

from __future__ import annotations

from typing import Any

import msgspec

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


def dumps(value: Any) -> str:
    """Encode to a JSON string; raises TypeError naming what could not be encoded."""
    try:
        return _encoder.encode(value).decode()
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
    args = list(args)
    try:
        _encoder.encode(args)
        _encoder.encode(kwargs)
    except (TypeError, msgspec.EncodeError, OverflowError) as exc:
        raise TypeError(f"arguments of {task!r} must be JSON-serialisable: {exc}") from None
    return args, kwargs
