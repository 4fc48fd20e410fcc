"""What the benchmark drivers measured, and the Markdown tables they print: median and spread per figure.

A ``Row`` is one system at one setting (``conveyor (default -c 8)``, ``huey``, ...) with one
``Round`` per ``--repeat``. Each table cell is the median over the rounds with the spread
(min-max) beside it; ratios are computed from the medians. The results also round-trip through
JSON (``--json``), which is how bench_compare.py puts two checkouts' runs in one table.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from _record import BODIES


@dataclass
class Round:
    """One round of one row. A figure not measured is None (or absent, for a body's drain)."""

    single: float | None = None  #: jobs/s
    bulk: list[float] = field(default_factory=list)  #: jobs/s, one per drain queue filled
    drain: dict[str, float] = field(default_factory=dict)  #: body -> jobs/s, first task start to last finish
    drain_cold: dict[str, float] = field(default_factory=dict)  #: body -> jobs/s, including worker start-up
    latencies: list[float] = field(default_factory=list)  #: idle-start latency samples, seconds


@dataclass
class Row:
    label: str  #: as printed: "conveyor (default -c 8)"
    system: str  #: "conveyor", "huey", ...
    settings: str  #: the settings, stated in full under the table
    conveyor: bool = False
    unsupported: dict[str, str] = field(default_factory=dict)  #: body -> why this system has no such body
    rounds: list[Round] = field(default_factory=list)
    short: str = ""  #: a short name for ratio headings ("default", "tuned"); the label if empty

    @property
    def setting(self) -> str:
        """The setting in the label's parentheses ("default -c 8"), or the label."""
        return self.label.split("(", 1)[1].rstrip(")") if "(" in self.label else self.label


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


# metrics ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Metric:
    key: str
    title: str
    value: Callable[[Round], float | None]
    latency: bool = False  #: lower is better; shown in ms
    body: str | None = None  #: a drain metric's body


def _bulk(r: Round) -> float | None:
    return statistics.median(r.bulk) if r.bulk else None


def _lat(q: float) -> Callable[[Round], float | None]:
    return lambda r: pct(r.latencies, q) if r.latencies else None


def _drain(body: str) -> Callable[[Round], float | None]:
    return lambda r: r.drain.get(body)


def metrics(bodies: Iterable[str], single_jobs: int, jobs: int) -> list[Metric]:
    found = [
        Metric("single", f"single enqueue, jobs/s (x{single_jobs:,})", lambda r: r.single),
        Metric("bulk", f"bulk enqueue, jobs/s (x{jobs:,})", _bulk),
    ]
    found += [Metric(f"drain:{b}", f"drain, `{b}` body, jobs/s", _drain(b), body=b) for b in BODIES if b in bodies]
    found += [
        Metric("p50", "idle-start latency p50", _lat(50), latency=True),
        Metric("p99", "idle-start latency p99", _lat(99), latency=True),
    ]
    return found


def summary(row: Row, metric: Metric) -> tuple[float, float, float, int] | None:
    """(median, min, max, rounds) of ``metric`` over the row's rounds; None if never measured."""
    values = [v for v in (metric.value(r) for r in row.rounds) if v is not None]
    if not values:
        return None
    return statistics.median(values), min(values), max(values), len(values)


def median(row: Row, metric: Metric) -> float | None:
    found = summary(row, metric)
    return None if found is None else found[0]


# tables -------------------------------------------------------------------------------------
def _number(x: float, latency: bool) -> str:
    return f"{x * 1000:.2f}" if latency else f"{x:,.0f}"


def cell(row: Row, metric: Metric, notes: dict[str, int]) -> str:
    found = summary(row, metric)
    if found is None:
        why = row.unsupported.get(metric.body or "")
        if why is None:
            return "—"
        note = notes.setdefault(why, len(notes) + 1)
        return f"n/a [{note}]"
    mid, low, high, n = found
    unit = " ms" if metric.latency else ""
    text = _number(mid, metric.latency) + unit
    if n > 1:
        text += f" ({_number(low, metric.latency)}\u2013{_number(high, metric.latency)})"
    return text


def figures_table(rows: list[Row], measured: list[Metric], title: str) -> str:
    """Rows = metrics, columns = rows (systems): median (min-max) per cell, then the n/a notes."""
    notes: dict[str, int] = {}
    lines = [f"**{title}**", "", "| metric | " + " | ".join(r.label for r in rows) + " |"]
    lines.append("|---|" + "---:|" * len(rows))
    for metric in measured:
        lines.append(f"| {metric.title} | " + " | ".join(cell(r, metric, notes) for r in rows) + " |")
    lines += [""] + [f"[{n}] {why}" for why, n in notes.items()] + [""] * bool(notes)
    return "\n".join(lines)


def ratio(num: Row, den: Row, metric: Metric) -> float | None:
    """num vs den from the medians, > 1 when ``num`` is better: num/den for rates, den/num for latencies."""
    a, b = median(num, metric), median(den, metric)
    if not a or not b:
        return None
    return b / a if metric.latency else a / b


def ratio_table(pairs: list[tuple[Row, Row, str]], measured: list[Metric], title: str) -> str:
    """Rows = metrics, one column per (numerator, denominator, heading) pair."""
    lines = [f"**{title}**", "", "| metric | " + " | ".join(h for _, _, h in pairs) + " |"]
    lines.append("|---|" + "---:|" * len(pairs))
    for metric in measured:
        cells = []
        for num, den, _ in pairs:
            found = ratio(num, den, metric)
            missing = "n/a" if (metric.body or "") in num.unsupported or (metric.body or "") in den.unsupported else "—"
            cells.append(missing if found is None else f"{found:.2f}x")
        lines.append(f"| {metric.title} | " + " | ".join(cells) + " |")
    return "\n".join([*lines, ""])


def aim_line(text: str, num: Row | None, den: Row | None, metric: Metric, at_least: float) -> str:
    found = ratio(num, den, metric) if num and den else None
    if found is None:
        return f"- {text}: not measured"
    return f"- {text}: {found:.2f}x, {'met' if found >= at_least else 'MISSED'}"


def settings_lines(rows: list[Row]) -> str:
    return "\n".join(f"- {r.label}: {r.settings}" for r in rows)


def rounds_lines(rows: list[Row], measured: list[Metric]) -> str:
    """One line per row and round: every figure, for a look at the spread."""
    lines = []
    for row in rows:
        for i, r in enumerate(row.rounds):
            parts = []
            for metric in measured:
                v = metric.value(r)
                if v is not None:
                    parts.append(f"{metric.key} {_number(v, metric.latency)}{' ms' if metric.latency else ''}")
            lines.append(f"{row.label} round {i + 1}: " + "  ".join(parts))
    return "\n".join(lines)


# JSON ---------------------------------------------------------------------------------------
def dump(path: str | Path, rows: list[Row], meta: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=1))


def load(path: str | Path) -> tuple[list[Row], dict[str, Any]]:
    data = json.loads(Path(path).read_text())
    rows = []
    for raw in data["rows"]:
        rounds = [Round(**r) for r in raw.pop("rounds")]
        rows.append(Row(**raw, rounds=rounds))
    return rows, data["meta"]
