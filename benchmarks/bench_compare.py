"""conveyor before and after: the same harness run against another checkout and this one, rounds alternating.

    python benchmarks/bench_compare.py --baseline-dir /work/baseline [--store sqlite,postgres]
        [--repeat 3] [--body all] [--quick] [-- any bench_sqlite.py / bench_postgres.py option]

Each round runs this directory's bench_<store>.py twice with ``--repeat 1 --json``, conveyor
only: once with the baseline checkout's interpreter (``PATH/.venv/bin/python``, ``PYTHONPATH=PATH``),
so the enqueues and the workers are that checkout's conveyor, and once with this checkout's
(``--current-dir``, default this repository). The order alternates per round, so a noisy spell
hits both. It prints median (min-max) per figure and after/before ratios from the medians.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _report  # noqa: E402
from _report import Row  # noqa: E402
from bench_sqlite import bodies_of  # noqa: E402


def side_env(checkout: Path) -> dict[str, str]:
    """The environment a run of one side gets: its checkout first on PYTHONPATH (workers inherit it)."""
    path = os.pathsep.join(p for p in (str(checkout), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


def run_side(
    python: str, checkout: Path, store: str, out: Path, log: Path, extra: list[str]
) -> tuple[list[Row], dict[str, Any]]:
    """One round of bench_<store>.py, conveyor only, under ``python``; its rows from the JSON it writes."""
    only = ["--only", "conveyor"] if store == "sqlite" else ["--systems", "conveyor", "--claim-depths", ""]
    argv = [python, str(HERE / f"bench_{store}.py"), "--repeat", "1", "--json", str(out), *only, *extra]
    with open(log, "wb") as sink:
        code = subprocess.call(argv, cwd=HERE, env=side_env(checkout), stdout=sink, stderr=subprocess.STDOUT)
    if code != 0 or not out.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise SystemExit(f"{' '.join(argv)}\nexited with code {code}:\n{tail}")
    rows, meta = _report.load(out)
    print(f"    conveyor from {meta['conveyor']} (python {meta['python']}, {meta['executable']}); load {meta['load']}")
    return rows, meta


def merge(into: dict[str, Row], rows: list[Row], side: str) -> None:
    for row in rows:
        label = f"{side}, {row.setting}"
        if label not in into:
            into[label] = Row(label, row.system, row.settings, row.conveyor, row.unsupported, short=row.setting)
        into[label].rounds += row.rounds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--baseline-dir", type=Path, required=True,
                        help="the older checkout; its venv at PATH/.venv has the bench extras installed")  # fmt: skip
    parser.add_argument("--baseline-label", default=None, help="what to call it in the tables (default: its path)")
    parser.add_argument("--current-dir", type=Path, default=HERE.parent, help="this checkout (default: this repo)")
    parser.add_argument("--current-label", default="current", help="what to call it in the tables (current)")
    parser.add_argument("--store", default="sqlite,postgres", help="sqlite, postgres or sqlite,postgres (default both)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per side (default 3)")
    parser.add_argument("--body", default="all", help="noop|redis|redis-async|all (default all)")
    parser.add_argument("--quick", action="store_true", help="a smoke run (passes --quick on)")
    parser.add_argument("--keep", action="store_true", help="keep the runs' logs and JSON files")
    args, extra = parser.parse_known_args(argv)
    extra = [x for x in extra if x != "--"]
    bodies = bodies_of(args.body)
    stores = [s.strip() for s in args.store.split(",") if s.strip()]
    if not stores or set(stores) - {"sqlite", "postgres"}:
        parser.error("--store: sqlite, postgres or sqlite,postgres")
    baseline_python = args.baseline_dir / ".venv" / "bin" / "python"
    if not baseline_python.exists():
        parser.error(f"{baseline_python} not found: the baseline checkout needs its own venv with the bench extras")
    current_venv = args.current_dir / ".venv" / "bin" / "python"
    current_python = str(current_venv) if current_venv.exists() else sys.executable
    before = f"before {args.baseline_label or args.baseline_dir}"
    after = f"after {args.current_label}"
    sides = [(before, str(baseline_python), args.baseline_dir), (after, current_python, args.current_dir)]
    passed = ["--body", ",".join(bodies), *(["--quick"] if args.quick else []), *extra]

    tmp = Path(tempfile.mkdtemp(prefix="conveyor-bench-compare-"))
    try:
        for store in stores:
            rows: dict[str, Row] = {}
            meta: dict[str, Any] = {}
            for round_ in range(args.repeat):
                order = sides if round_ % 2 == 0 else sides[::-1]
                for name, python, checkout in order:
                    tag = f"{store}-{round_}-{'before' if name == before else 'after'}"
                    print(f"[{store}] round {round_ + 1}/{args.repeat}: {name} ...", flush=True)
                    found, meta = run_side(python, checkout, store, tmp / f"{tag}.json", tmp / f"{tag}.log", passed)
                    merge(rows, found, name)
            report(store, list(rows.values()), meta, args, bodies, before, after)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


def report(
    store: str,
    rows: list[Row],
    meta: dict[str, Any],
    args: argparse.Namespace,
    bodies: list[str],
    before: str,
    after: str,
) -> None:
    measured = _report.metrics(bodies, meta["single_jobs"], meta["jobs"])
    ordered = sorted(rows, key=lambda r: (r.short.startswith("tuned"), r.label.startswith(after)))
    spread = f"median (min\u2013max) of {args.repeat} rounds" if args.repeat > 1 else "1 round"
    title = f"{store}: conveyor before / after, {meta['jobs']:,} jobs per drain, 2 worker processes, {spread}"
    if args.quick:
        title += " — QUICK SMOKE RUN, not figures to quote"
    print()
    print(_report.figures_table(ordered, measured, title))
    print("Settings:")
    print(_report.settings_lines([r for r in ordered if r.label.startswith(after)]))
    print()
    pairs = []
    for row in ordered:
        if row.label.startswith(after):
            base = next((r for r in rows if r.label == f"{before}, {row.short}"), None)
            if base:
                pairs.append((row, base, f"after / before, {row.short}"))
    print(_report.ratio_table(pairs, measured, "after / before, from the medians (> 1: after is better)"))
    if pairs:
        by_key = {m.key: m for m in measured}
        line = _report.aim_line("idle-start latency p50 no worse than before, default settings", pairs[0][0],
                                pairs[0][1], by_key["p50"], 1.0)  # fmt: skip
        print(line + " (a ratio inside the rounds' spread above is noise, not a regression)")
    print()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
