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


_HINTS = {
    "datetime": "pass dt.isoformat() or dt.timestamp()",
    "date": "pass d.isoformat()",
    "bytes": "pass base64.b64encode(b).decode() or b.hex()",
    "bytearray": "pass base64.b64encode(b).decode() or b.hex()",
    "set": "pass sorted(s) or list(s)",
    "frozenset": "pass sorted(s) or list(s)",
    "tuple": "pass a list",
}


class ArgumentError(TypeError):
    """An argument that JSON cannot carry unchanged: refused before anything is stored."""


def check_json(value: Any, path: str) -> None:
    """Refuse anything but str, int, float (finite), bool, None, list and dict with str keys, at any
    depth: msgspec would store a datetime, bytes, set or tuple as a string or a list, and the task
    would get back something else than was given. Raises ArgumentError naming the path and type."""
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ArgumentError(f"{path} is {value!r}: NaN and infinite floats have no JSON form")
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            check_json(item, f"{path}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ArgumentError(
                    f"{path} has the key {key!r} ({type(key).__name__}): JSON object keys are strings; "
                    "use str keys, or the task would get the key back as a string"
                )
            check_json(item, f"{path}[{key!r}]")
        return
    kind = type(value).__name__
    hint = _HINTS.get(kind, "convert it to str, int, float, bool, None, list or dict first")
    raise ArgumentError(
        f"{path} is a {kind} ({value!r:.60}): arguments are JSON (str, int, float, bool, None, list, "
        f"dict with str keys) and a {kind} would not come back as one; {hint}"
    )


def check_payload(task: str, args: Any, kwargs: Any) -> tuple[list[Any], dict[str, Any]]:
    """Validate a call's arguments before anything is stored, with a clear error: JSON values only
    (``check_json``); the positional arguments themselves may be a list or a tuple."""
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise TypeError(f"kwargs of {task!r} must be a dict with str keys, got {kwargs!r}")
    if not isinstance(args, (list, tuple)):  # a str or dict would be silently split into its items
        raise TypeError(f"args of {task!r} must be a list or tuple, got {type(args).__name__} {args!r}")
    args = list(args)
    if not _round_trips(args) or not _round_trips(kwargs):  # the fast path: C code, no Python walk
        try:
            for i, arg in enumerate(args):
                check_json(arg, f"args[{i}]")
            for name, value in kwargs.items():
                check_json(value, f"kwargs[{name!r}]")
        except ArgumentError as exc:
            raise ArgumentError(f"argument {exc} (task {task!r})") from None
        raise ArgumentError(f"the arguments of {task!r} do not come back equal from JSON")  # a strange __eq__
    return args, kwargs


def _round_trips(value: Any) -> bool:
    """True if ``value`` comes back equal from JSON: a tuple, set, datetime, bytes, int key or NaN
    does not (it comes back as a list, a string, or null), so only a JSON value passes."""
    try:
        return bool(_decoder.decode(_encoder.encode(value)) == value)
    except (TypeError, msgspec.EncodeError, OverflowError):
        return False
