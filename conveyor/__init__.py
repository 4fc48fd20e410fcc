"""conveyor: a durable task runner. Start on a SQLite file; grow onto a server when one machine is not enough."""

from .app import App, load_app
from .context import JobContext, current_job
from .errors import (
    ConveyorError,
    DeadlockError,
    Discard,
    DuplicateJob,
    InvalidTransition,
    JobFailed,
    JobNotFound,
    Retry,
    StoreError,
    StoreUnavailable,
)
from .handle import JobHandle
from .job import ExitCode, Job, JobError, Priority, Status
from .task import Signature, Task
from .worker import Worker, WorkerOptions

__all__ = [
    "App",
    "ConveyorError",
    "DeadlockError",
    "Discard",
    "DuplicateJob",
    "ExitCode",
    "InvalidTransition",
    "Job",
    "JobContext",
    "JobError",
    "JobFailed",
    "JobHandle",
    "JobNotFound",
    "Priority",
    "Retry",
    "Signature",
    "Status",
    "StoreError",
    "StoreUnavailable",
    "Task",
    "Worker",
    "WorkerOptions",
    "current_job",
    "load_app",
]
