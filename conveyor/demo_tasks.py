"""The tasks that ``conveyor demo`` runs: a small, importable app for the demo's worker processes.

Worker processes import this module as ``conveyor.demo_tasks:app``; the app
reads its store from $CONVEYOR_URL (the demo passes a temporary SQLite file).
Each task shows one behaviour: plain work, progress reports, a retry that
mends a transient failure, a failure that no retry mends, a high-priority
job and a delayed one; ``order``, a pipeline (docs/pipelines.md) whose
stages pass results on and wait for a payment message and on a timer; and
``tick``, declared with ``@app.periodic`` (docs/schedules.md): the worker
processes put its schedule into the store when they start, and fire its ticks;
and ``price_feed``, a long-running service (``@app.service``, docs/services.md)
that one worker process runs at a time, writing a line per beat to a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import threading
import time
from datetime import UTC, datetime
from typing import Any

from .app import App
from .context import current_job
from .job import Priority
from .refs import Ref
from .services import ServiceContext
from .stages import Message, Timer

app = App(lease=10.0)

#: Task names, for the demo's summary (module.qualname, as ``@app.task`` names them).
RESIZE = "conveyor.demo_tasks.resize_image"
REPORT = "conveyor.demo_tasks.build_report"
FETCH = "conveyor.demo_tasks.fetch_rates"
IMPORT = "conveyor.demo_tasks.import_csv"
CHARGE = "conveyor.demo_tasks.charge_card"
REMIND = "conveyor.demo_tasks.send_reminder"
RECEIPT = "conveyor.demo_tasks.email_receipt"
TICK = "conveyor.demo_tasks.tick"  #: the task and the name of its schedule
TICK_QUEUE = "clock"  #: the ticks' jobs have a queue of their own: the demo counts its batch apart
TICK_EVERY = 1.0  #: seconds between ticks

REPORT_STEPS = ("loading rows", "joining tables", "aggregating", "rendering charts", "writing PDF")


@app.task
def resize_image(image_id: int, width: int = 320) -> dict[str, int]:
    """Plain short work: the bulk of the demo's jobs."""
    time.sleep(random.uniform(0.05, 0.2))
    return {"image": image_id, "width": width, "height": width * 3 // 4}


@app.task(timeout=30)
def build_report(name: str, pages: int) -> str:
    """A longer job that reports its progress (percent and a message) as it goes."""
    job = current_job()
    steps = len(REPORT_STEPS) * 2
    for step in range(steps):
        what = REPORT_STEPS[step * len(REPORT_STEPS) // steps]
        job.progress(100 * step / steps, f"{name}: {what} ({step + 1}/{steps})")
        time.sleep(0.25)
    job.progress(100, f"{name}: done, {pages} pages")
    return f"{name}.pdf"


@app.task(max_retries=3, backoff=0.5)
def fetch_rates(currency: str) -> float:
    """Fails on its first run (a flaky upstream), then succeeds when retried after a back-off."""
    if current_job().job.retries == 0:
        raise ConnectionError(f"rates service timed out for {currency}")
    time.sleep(0.05)
    return round(random.uniform(0.5, 1.5), 4)


@app.task(max_retries=1, backoff=0.3)
def import_csv(filename: str) -> int:
    """Fails for a malformed file: retried once (max_retries=1 allows 2 runs), then failed for good."""
    time.sleep(0.05)
    if "corrupt" in filename:
        raise ValueError(f"{filename}: line 17 has 4 fields, expected 6")
    return random.randint(100, 1000)


@app.task(priority=Priority.HIGH)
def charge_card(order_id: int, cents: int) -> str:
    """High priority: enqueued last, it still runs ahead of the bulk."""
    time.sleep(0.05)
    return f"charged order {order_id}: {cents / 100:.2f} EUR"


@app.task
def send_reminder(user: str) -> str:
    """Enqueued with a delay: it is scheduled, and runs only once it falls due."""
    return f"reminded {user}"


# an order: a pipeline (docs/pipelines.md) -----------------------------------------------------------
PRICE = 12  #: per item, in EUR
SHOP = "shop-42"  #: the orders' owner, notified when one finishes


@app.task
def reserve_stock(order_id: str, items: list[str]) -> dict[str, Any]:
    """Stage 0: hold the stock; say what the payment must cover."""
    time.sleep(0.1)
    return {"hold": f"H-{order_id}", "amount": PRICE * len(items)}


@app.task
def ship_order(order_id: str, hold: str, paid: int) -> dict[str, Any]:
    """Stage 2: ship, with the hold from stage 0 and the amount from the payment (stage 1)."""
    time.sleep(0.1)
    return {"tracking": f"TRK-{order_id}", "from": hold, "paid": paid}


@app.task
def confirm_delivery(order_id: str, tracking: str) -> str:
    """Stage 4, after the timer: the parcel arrived."""
    return f"{order_id} delivered ({tracking})"


@app.task
def email_receipt(order_id: str, paid: int) -> str:
    """Chained (``then``): started when an order succeeds, in the same transaction."""
    return f"receipt for {order_id}: {paid} EUR"


order = app.pipeline(
    reserve_stock.s(order_id=Ref.kws("order_id"), items=Ref.kws("items")),
    Message("payment"),  # the job is WAITING, holding no worker, until the payment comes
    ship_order.s(order_id=Ref.kws("order_id"), hold=Ref.stage(0)["hold"], paid=Ref.stage(1)["amount"]),
    Timer(1),  # a second in transit: WAITING again; the leader releases it
    confirm_delivery.s(order_id=Ref.kws("order_id"), tracking=Ref.stage(2)["tracking"]),
    name="order",
    owner=SHOP,
    notify=True,
    priority=Priority.HIGH,  # its stages jump the bulk's queue
    then=email_receipt.s(order_id=Ref.kws("order_id"), paid=Ref.stage(1)["amount"]),
)


# a schedule (docs/schedules.md) ------------------------------------------------------------------------
@app.periodic(every=TICK_EVERY, queue=TICK_QUEUE, priority=Priority.HIGH)
def tick() -> str:
    """One job per tick of its schedule, whichever worker process fires the tick; HIGH: it runs at its
    tick, ahead of the bulk."""
    tick_at = current_job().job.tick_at
    return "tick" if tick_at is None else f"tick {datetime.fromtimestamp(tick_at, UTC):%H:%M:%S}"


# a service (docs/services.md) --------------------------------------------------------------------------
FEED = "price_feed"  #: the service, and the name of the demo's instance of it
FEED_LEASE = 3.0  #: seconds a worker holds the replica between renewals (renewed every lease / 6)
FEED_GRACE = 1.0  #: seconds a stop may take before the run is killed (at most lease / 3)
BEAT_EVERY = 0.25  #: seconds between beats
SYMBOL = "EUR/USD"  #: what the feed follows unless told otherwise


@app.service(lease=FEED_LEASE, grace=FEED_GRACE)
def price_feed(ctx: ServiceContext, beats: str, symbol: str = SYMBOL) -> None:
    """Runs until asked to stop, on one worker process at a time: appends a line to the file ``beats``
    when it starts, every BEAT_EVERY s while it runs (its pid, generation and ``symbol``), and when it
    ends. It waits on its "connection" (``ctx.resource``) between beats; the on_stop hook hangs it up."""
    _write(beats, ctx, "start", symbol)
    hung_up: threading.Event = ctx.resource
    while not hung_up.wait(BEAT_EVERY):
        _write(beats, ctx, "beat", symbol)
    _write(beats, ctx, "end", symbol)


@price_feed.context
def _connect(ctx: ServiceContext) -> contextlib.nullcontext[threading.Event]:
    """Each run's stand-in for a connection to a price feed (``ctx.resource``): an Event the run waits
    on between beats, set when the connection is hung up."""
    return contextlib.nullcontext(threading.Event())


@price_feed.on_stop
def _hang_up(ctx: ServiceContext) -> None:
    """Called when a stop is asked (reload, the worker stopping, ...): note it, and hang up the
    connection, so the run returns at once instead of at its next beat."""
    _write(str(ctx.params["beats"]), ctx, "on_stop", str(ctx.params.get("symbol", SYMBOL)), why=ctx.why)
    if ctx.resource is not None:
        ctx.resource.set()


def _write(path: str, ctx: ServiceContext, what: str, symbol: str, why: str | None = None) -> None:
    """One JSON line, appended in a single write (O_APPEND): the file's order is the order they happened."""
    line = {"t": time.time(), "what": what, "pid": os.getpid(), "worker": ctx.worker_id,
            "generation": ctx.generation, "run": ctx.token[:8], "symbol": symbol, "why": why}  # fmt: skip
    with open(path, "a", encoding="utf-8") as file:
        file.write(json.dumps(line) + "\n")
