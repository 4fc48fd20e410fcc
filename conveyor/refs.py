"""References and conditions: values a pipeline's stage takes from the running job, as data.

``Ref.kws("url")``, ``Ref.stage(0)["doc"][2]`` and ``Ref.job_id()`` stand for the job's keyword, an
earlier stage's result (nested keys and list indices) and the job's id; comparing a Ref
(``Ref.stage(1)["score"] > 0.5``) makes a ``Cond``, which ``&``, ``|`` and ``~`` combine. Both are
frozen into the job as JSON (``encode``) and resolved by conveyor when the stage is reached
(``resolve``, ``holds``): no ``eval``, no code in strings. A reference that cannot be resolved
raises TemplateError naming it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

REF = "$conveyor.ref"  #: the key that marks a reference in a frozen stage's parameters
COND = "$conveyor.cond"  #: the key that marks a condition
ROOTS = ("kws", "stage", "job_id")
_COMPARE = {"eq", "ne", "lt", "le", "gt", "ge"}
_OPS = _COMPARE | {"truthy", "not", "and", "or", "in", "is_none"}
_SIGNS = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


class TemplateError(ValueError):
    """A reference or condition that cannot be resolved against the job (a missing key, an index
    out of range, a stage with no result yet, values that cannot be compared)."""


class Ref:
    """A value taken from the job when its stage is reached. Build with ``Ref.kws``,
    ``Ref.stage`` or ``Ref.job_id``; index with ``[key]`` or ``[i]`` to go into a result."""

    __slots__ = ("path",)
    __hash__ = None  # type: ignore[assignment]  # == builds a Cond, so a Ref is not hashable

    def __init__(self, path: Sequence[str | int]) -> None:
        self.path: tuple[str | int, ...] = tuple(path)
        check_path(self.path)

    @classmethod
    def kws(cls, key: str | None = None) -> Ref:
        """The job's keyword ``key`` (the pipeline's ``kws``), or all of them as a dict."""
        return cls(("kws",) if key is None else ("kws", key))

    @classmethod
    def stage(cls, index: int) -> Ref:
        """The result of stage ``index`` (counting from 0), which must come before the stage using it."""
        return cls(("stage", index))

    @classmethod
    def job_id(cls) -> Ref:
        """The id of the job."""
        return cls(("job_id",))

    def __getitem__(self, key: str | int) -> Ref:
        return Ref((*self.path, key))

    def __repr__(self) -> str:
        return describe(self.path)

    def __bool__(self) -> bool:
        raise TypeError(f"{self!r} is resolved when the job runs: pass it to .when(), or combine with & | ~")

    # comparisons make conditions ------------------------------------------------------------
    def __eq__(self, other: object) -> Cond:  # type: ignore[override]
        return Cond("eq", (self, other))

    def __ne__(self, other: object) -> Cond:  # type: ignore[override]
        return Cond("ne", (self, other))

    def __lt__(self, other: object) -> Cond:
        return Cond("lt", (self, other))

    def __le__(self, other: object) -> Cond:
        return Cond("le", (self, other))

    def __gt__(self, other: object) -> Cond:
        return Cond("gt", (self, other))

    def __ge__(self, other: object) -> Cond:
        return Cond("ge", (self, other))

    def __invert__(self) -> Cond:
        return Cond("not", (Cond("truthy", (self,)),))

    def isin(self, values: Sequence[Any]) -> Cond:
        """True when the value is one of ``values``."""
        return Cond("in", (self, list(values)))

    def is_none(self) -> Cond:
        """True when the value is None (a skipped stage's result, JSON null)."""
        return Cond("is_none", (self,))


class Cond:
    """A condition on the job, evaluated when its stage is reached: a comparison of a Ref, or
    ``a & b``, ``a | b``, ``~a``. A bare Ref given as a condition means "is truthy"."""

    __slots__ = ("args", "op")

    def __init__(self, op: str, args: Sequence[Any]) -> None:
        if op not in _OPS:
            raise ValueError(f"unknown condition {op!r}")
        self.op = op
        self.args = tuple(args)

    def __and__(self, other: Cond | Ref) -> Cond:
        return Cond("and", (self, as_cond(other)))

    def __or__(self, other: Cond | Ref) -> Cond:
        return Cond("or", (self, as_cond(other)))

    def __invert__(self) -> Cond:
        return Cond("not", (self,))

    def __bool__(self) -> bool:
        raise TypeError("a condition is evaluated when the job runs: combine conditions with & | ~, not and/or/not")

    def __repr__(self) -> str:
        return describe_cond(encode(self))


def as_cond(value: Cond | Ref) -> Cond:
    """A condition: a Cond as it is, a Ref as "is truthy"; TypeError for anything else."""
    if isinstance(value, Cond):
        return value
    if isinstance(value, Ref):
        return Cond("truthy", (value,))
    raise TypeError(f"a condition must be a Ref or a comparison of one (Ref.stage(0)['ok'] == True), got {value!r}")


def check_path(path: tuple[Any, ...]) -> None:
    """Raise ValueError for a path that is not a reference: its root, then keys (str) and indices (int)."""
    if not path or path[0] not in ROOTS:
        raise ValueError(f"a reference starts at one of {ROOTS}, got {path!r}")
    if path[0] == "stage" and (len(path) < 2 or not _is_index(path[1]) or path[1] < 0):
        raise ValueError(f"Ref.stage takes a stage index >= 0, got {path[1:2]!r}")
    if path[0] == "kws" and len(path) > 1 and not isinstance(path[1], str):
        raise ValueError(f"Ref.kws takes a keyword name (a str), got {path[1]!r}")
    if path[0] == "job_id" and len(path) > 1:
        raise ValueError("Ref.job_id() has no keys")
    for step in path[2 if path[0] == "stage" else 1 :]:
        if not isinstance(step, str) and not _is_index(step):
            raise ValueError(f"a reference goes into a result by str keys and int indices, got {step!r}")


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def describe(path: Sequence[Any]) -> str:
    """A reference as the user wrote it: ``Ref.stage(0)['doc'][2]``."""
    root = path[0]
    if root == "stage":
        head, rest = f"Ref.stage({path[1]})", path[2:]
    elif root == "kws":
        head, rest = (f"Ref.kws({path[1]!r})", path[2:]) if len(path) > 1 else ("Ref.kws()", ())
    else:
        head, rest = "Ref.job_id()", path[1:]
    return head + "".join(f"[{step!r}]" for step in rest)


# the frozen (JSON) form ------------------------------------------------------------------------
def encode(value: Any) -> Any:
    """``value`` with every Ref and Cond in it (at any depth of dicts, lists and tuples) replaced
    by its JSON form; other values as they are (checked as JSON by the caller)."""
    if isinstance(value, Ref):
        return {REF: list(value.path)}
    if isinstance(value, Cond):
        return {COND: value.op, "args": [encode(arg) for arg in value.args]}
    if isinstance(value, dict):
        return {key: encode(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(item) for item in value]
    return value


def encode_cond(value: Cond | Ref | None) -> dict[str, Any] | None:
    """A stage's condition in JSON form (a bare Ref: "is truthy"); None for none."""
    return None if value is None else encode(as_cond(value))


def refs_in(frozen: Any) -> Iterator[tuple[Any, ...]]:
    """The paths of the references in a frozen value (conditions included)."""
    if isinstance(frozen, dict):
        if REF in frozen:
            yield tuple(frozen[REF])
            return
        for item in frozen.values():
            yield from refs_in(item)
    elif isinstance(frozen, list):
        for item in frozen:
            yield from refs_in(item)


def check_frozen(frozen: Any) -> None:
    """Raise ValueError for a frozen value whose references or conditions are malformed (a
    pipeline read back from JSON, e.g. from the HTTP API)."""
    if isinstance(frozen, dict):
        if REF in frozen:
            path = frozen[REF]
            if not isinstance(path, list) or len(frozen) != 1:
                raise ValueError(f"a reference is {{{REF!r}: [path...]}}, got {frozen!r}")
            check_path(tuple(path))
            return
        malformed = frozen.get(COND) not in _OPS or not isinstance(frozen.get("args"), list) or len(frozen) != 2
        if COND in frozen and malformed:
            raise ValueError(f"a condition is {{{COND!r}: op, 'args': [...]}} with op one of {sorted(_OPS)}")
        for item in frozen.values():
            check_frozen(item)
    elif isinstance(frozen, list):
        for item in frozen:
            check_frozen(item)


# resolving -------------------------------------------------------------------------------------
class Scope(NamedTuple):
    """What references resolve against: the job's keywords, its stage results so far, its id."""

    kws: Mapping[str, Any]
    results: Sequence[Any]
    job_id: str


def resolve(frozen: Any, scope: Scope) -> Any:
    """``frozen`` with every reference replaced by its value; TemplateError names one that fails."""
    if isinstance(frozen, dict):
        if REF in frozen:
            return lookup(tuple(frozen[REF]), scope)
        if COND in frozen:
            return holds(frozen, scope)
        return {key: resolve(item, scope) for key, item in frozen.items()}
    if isinstance(frozen, list):
        return [resolve(item, scope) for item in frozen]
    return frozen


def lookup(path: tuple[Any, ...], scope: Scope) -> Any:
    """The value a reference stands for; TemplateError saying which step of it failed."""
    root = path[0]
    if root == "job_id":
        return scope.job_id
    if root == "kws":
        if len(path) == 1:
            return dict(scope.kws)
        if path[1] not in scope.kws:
            known = ", ".join(sorted(scope.kws)) or "none"
            raise TemplateError(f"{describe(path)}: the job has no keyword {path[1]!r} (its keywords: {known})")
        value, start = scope.kws[path[1]], 2
    else:
        index = path[1]
        if index >= len(scope.results):
            raise TemplateError(f"{describe(path)}: stage {index} has no result yet")
        value, start = scope.results[index], 2
    for depth in range(start, len(path)):
        step = path[depth]
        where = describe(path[:depth])
        if isinstance(step, str):
            if not isinstance(value, dict):
                raise TemplateError(f"{describe(path)}: {where} is {_kind(value)}, which has no key {step!r}")
            if step not in value:
                raise TemplateError(f"{describe(path)}: key {step!r} not found in {where}")
            value = value[step]
        else:
            if not isinstance(value, list):
                raise TemplateError(f"{describe(path)}: {where} is {_kind(value)}, which has no index {step}")
            if not -len(value) <= step < len(value):
                raise TemplateError(f"{describe(path)}: index {step} out of range ({where} has {len(value)} items)")
            value = value[step]
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "None"
    return {dict: "an object", list: "a list", str: "a string", bool: "a bool"}.get(type(value), "a number")


def holds(frozen: dict[str, Any], scope: Scope) -> bool:
    """Whether a frozen condition is true for the job; TemplateError for a reference that cannot be
    resolved or values that cannot be compared."""
    op, args = frozen[COND], frozen["args"]
    if op == "and":
        return all(holds(arg, scope) for arg in args)
    if op == "or":
        return any(holds(arg, scope) for arg in args)
    if op == "not":
        return not holds(args[0], scope)
    values = [resolve(arg, scope) for arg in args]
    if op == "truthy":
        return bool(values[0])
    if op == "is_none":
        return values[0] is None
    if op == "in":
        return values[0] in values[1]
    left, right = values
    if op == "eq":
        return bool(left == right)
    if op == "ne":
        return bool(left != right)
    if not (_orderable(left) and _orderable(right) and isinstance(left, str) == isinstance(right, str)):
        raise TemplateError(f"{describe_cond(frozen)}: cannot compare {left!r} with {right!r}")
    result: bool = {"lt": left < right, "le": left <= right, "gt": left > right, "ge": left >= right}[op]
    return result


def _orderable(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, str) or (isinstance(value, (int, float)) and not math.isnan(value))


def describe_cond(frozen: Any) -> str:
    """A frozen condition as the user wrote it: ``Ref.stage(1)['score'] > 0.5``."""
    if isinstance(frozen, dict) and REF in frozen:
        return describe(frozen[REF])
    if not isinstance(frozen, dict) or COND not in frozen:
        return repr(frozen)
    op, args = frozen[COND], frozen["args"]
    parts = [describe_cond(arg) for arg in args]
    if op == "truthy":
        return parts[0]
    if op == "not":
        return f"~({parts[0]})"
    if op in ("and", "or"):
        return f" {'&' if op == 'and' else '|'} ".join(f"({part})" for part in parts)
    if op == "in":
        return f"{parts[0]}.isin({parts[1]})"
    if op == "is_none":
        return f"{parts[0]}.is_none()"
    return f"{parts[0]} {_SIGNS[op]} {parts[1]}"
