"""The pipeline part of ``conveyor demo``: two orders of ``demo_tasks.order`` (docs/pipelines.md)
ride along with the batch, in its transaction.

A17's payment is sent once the App says the job is WAITING for it, a second later, as a payment
provider's callback would come; then sent again, as a retried callback: a duplicate, which
changes nothing. B42's payment is sent before any worker has started: it waits in the job's
mailbox and is taken when the job reaches the wait. The live display shows each order's stage;
the summary proves from the records what each stage returned, how long the waits held the job,
the chained receipts and the owner's notifications.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.text import Text

from . import demo_tasks as tasks
from .app import App
from .job import Job, NewJob, Status
from .messages import Delivery
from .pipeline import describe_stage

ORDERS = {"A17": ["tea", "cup"], "B42": ["pot"]}  #: order id: its items
LATE, EARLY = "A17", "B42"  #: paid once waiting, and paid before it got there
PAY_AFTER = 1.0  #: seconds A17 waits for its payment
JOBS = 2 * len(ORDERS)  #: each order's job, and the receipt it chains
UNTIL = {"message": "the message came", "timer": "the leader released it"}  #: what ended a wait


class Orders:
    """The demo's orders: enqueued with the batch, paid, followed and summed up."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.ids: dict[str, str] = {}
        self.sent: dict[str, list[Delivery]] = {}  #: order: what each send_message of its payment said

    def new_jobs(self, now: float) -> list[NewJob]:
        """The orders' jobs, for the batch's transaction."""
        jobs = [tasks.order.to_new_job(now, kws={"order_id": o, "items": items}) for o, items in ORDERS.items()]
        self.ids = {o: job.id for o, job in zip(ORDERS, jobs, strict=True)}
        return jobs

    def pay(self, order: str) -> Delivery:
        """Send ``order``'s payment (one message id per order, as a payment provider's event)."""
        amount = tasks.PRICE * len(ORDERS[order])
        delivery = self.app.send_message(self.ids[order], {"amount": amount}, name="payment", message_id=f"psp-{order}")
        self.sent.setdefault(order, []).append(delivery)
        return delivery

    def step(self) -> list[Text]:
        """Read the orders, pay A17 (twice) once it has waited PAY_AFTER s; one live line per order."""
        jobs = {order: self.app.job(job_id) for order, job_id in self.ids.items()}
        late = jobs[LATE]
        waited = self.app.clock() - late.scheduled_at  # a WAITING job's scheduled_at: when the wait began
        if late.status is Status.WAITING and late.waiting_for == "payment" and waited >= PAY_AFTER:
            self.pay(LATE)
            self.pay(LATE)  # a retried callback
        return [_live_line(order, job) for order, job in jobs.items()]

    def summary(self, console: Console, keep: bool) -> bool:
        """The orders' lines in the summary; True if both went through every stage as they should."""
        say = console.print
        job, early = self.app.job(self.ids[LATE]), self.app.job(self.ids[EARLY])
        stages = job.stages or []
        say(f"[bold]pipeline[/bold]: order {LATE} (job {job.id[:8]} of pipeline {tasks.order.name!r}, owner "
            f"{job.owner}) {job.status.value} after {len(job.results)} of {len(stages)} stages, "
            "each with its result:")  # fmt: skip
        waits = self._waits(job.id)
        for index, frozen in enumerate(stages):
            result = repr(job.results[index]) if index < len(job.results) else "-"
            seconds, until = waits.get(index, (None, ""))
            waited = "" if seconds is None else f"  (waited {seconds:.2f} s holding no worker, until {until})"
            say(Text(f"  {index} {_label(frozen):<18} {result}{waited}"))
        late_sent, early_sent = self.sent.get(LATE, []), self.sent.get(EARLY, [])
        say(f"  payment psp-{LATE}, sent once {LATE} was WAITING for it: {_said(late_sent[:1])}; "
            f"the same message id again: {_said(late_sent[1:])}, nothing changed")  # fmt: skip
        say(f"  payment psp-{EARLY}, sent before {EARLY} got to the wait: {_said(early_sent)} in its mailbox, "
            f"taken {self._waits(early.id).get(1, (0.0, ''))[0]:.2f} s after it got there")  # fmt: skip
        receipts = self.app.jobs(task=tasks.RECEIPT)
        say(f"  then: {len(receipts)} email_receipt jobs, each started by an order's success: "
            f"{', '.join(repr(r.result) for r in reversed(receipts))}")  # fmt: skip
        notes = self.app.notifications(tasks.SHOP, unread=True)
        order_of = {job_id: order for order, job_id in self.ids.items()}
        said = ", ".join(f"order {order_of.get(n.job_id)} {n.status} (exit code {n.exit_code}, "
                         f"{len(n.data.get('results') or [])} results)" for n in reversed(notes))  # fmt: skip
        say(f"  notify: {len(notes)} unread for {tasks.SHOP} in app.notifications({tasks.SHOP!r}): {said}")
        where = f" --url {self.app.url}" if keep else "  (run the demo with --keep to keep its store)"
        say(f"  every stage with its times and runs: [cyan]conveyor job {job.id[:8]}[/cyan]{where}; "
            "how to write a pipeline: docs/pipelines.md")  # fmt: skip
        return (
            all(self.app.job(i).status is Status.SUCCEEDED for i in self.ids.values())
            and late_sent == [Delivery.RESUMED, Delivery.DUPLICATE]
            and early_sent == [Delivery.STORED]
            and len(receipts) == len(ORDERS)
            and {note.job_id for note in notes} == set(self.ids.values())
        )

    def _waits(self, job_id: str) -> dict[int, tuple[float, str]]:
        """Per stage the job waited at: how long, and what ended the wait (from the event log)."""
        began: dict[int, float] = {}
        waits: dict[int, tuple[float, str]] = {}
        for event in self.app.events(job_id=job_id):
            data: dict[str, Any] = event.data or {}
            if event.kind == "stage_done" and data.get("waiting"):
                began[int(data["next"])] = event.at
            elif event.kind == "resumed" and int(data.get("stage", -1)) in began:
                stage = int(data["stage"])
                waits[stage] = (event.at - began[stage], UNTIL.get(str(data.get("by")), str(data.get("by"))))
        return waits


def _said(deliveries: list[Delivery]) -> str:
    return ", ".join(d.value.upper() for d in deliveries) or "not sent"


def _label(frozen: dict[str, Any]) -> str:
    """A stage in a few words: its task's short name, Timer(1), Message('payment')."""
    label = describe_stage(frozen)
    return label.rsplit(".", 1)[-1] if frozen.get("kind") == "call" else label


def _live_line(order: str, job: Job) -> Text:
    """Where an order is: its stage, and what it waits for."""
    stages = job.stages or []
    if job.status.finished:
        return Text(f"  order {order}  {job.status.value} after {len(stages)} stages", style="dim")
    if job.status is Status.WAITING and job.waiting_for is not None:
        doing = f"WAITING for message {job.waiting_for!r}, holding no worker"
    elif job.status is Status.WAITING:
        doing = "WAITING on its timer, holding no worker"
    else:
        doing = job.status.value
    return Text(f"  order {order}  stage {job.stage} {_label(stages[job.stage])}: {doing}")
