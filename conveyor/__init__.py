"""conveyor: a durable task runner. Start on a SQLite file; grow onto a server when one machine is not enough."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

try:
    __version__ = _version("conveyor")  #: the installed version (the worker registry records it)
except PackageNotFoundError:  # pragma: no cover - run from a source tree that was never installed
    __version__ = "0+unknown"

from .app import App, load_app
from .app_schedules import ScheduleNotFound
from .background import BackgroundWorker
from .context import JobContext, current_job
from .errors import (
    ConveyorError,
    DeadlockError,
    Discard,
    DuplicateJob,
    InvalidTransition,
    JobFailed,
    JobNotFound,
    LockNotAcquired,
    Retry,
    StoreError,
    StoreUnavailable,
    UnstorableText,
)
from .events import Event, EventKind
from .handle import JobHandle
from .health import Health
from .job import ExitCode, Job, JobError, Priority, Status
from .locks import Lock
from .messages import Delivery, Notification, StoredMessage
from .operations import QueueInfo, Switches, WorkerInfo, WorkerState
from .refs import Cond, Ref, TemplateError
from .schedule_types import Missed, Overlap, ScheduleRecord, Source, TickOutcome, TickRecord
from .service_types import ServiceAction, ServiceRecord, ServiceStatus
from .services import Service, ServiceContext, ServiceNotFound, UnknownService
from .stages import Message, Pipeline, Step, Timer
from .subscription import Subscription
from .task import Signature, Task
from .worker import Worker, WorkerOptions

__all__ = [
    "App",
    "BackgroundWorker",
    "Cond",
    "ConveyorError",
    "DeadlockError",
    "Delivery",
    "Discard",
    "DuplicateJob",
    "Event",
    "EventKind",
    "ExitCode",
    "Health",
    "InvalidTransition",
    "Job",
    "JobContext",
    "JobError",
    "JobFailed",
    "JobHandle",
    "JobNotFound",
    "Lock",
    "LockNotAcquired",
    "Message",
    "Missed",
    "Notification",
    "Overlap",
    "Pipeline",
    "Priority",
    "QueueInfo",
    "Ref",
    "Retry",
    "ScheduleNotFound",
    "ScheduleRecord",
    "Service",
    "ServiceAction",
    "ServiceContext",
    "ServiceNotFound",
    "ServiceRecord",
    "ServiceStatus",
    "Signature",
    "Source",
    "Status",
    "Step",
    "StoreError",
    "StoreUnavailable",
    "StoredMessage",
    "Subscription",
    "Switches",
    "Task",
    "TemplateError",
    "TickOutcome",
    "TickRecord",
    "Timer",
    "UnknownService",
    "UnstorableText",
    "Worker",
    "WorkerInfo",
    "WorkerOptions",
    "WorkerState",
    "__version__",
    "current_job",
    "load_app",
]
