"""The worker: claim due jobs, run them, keep their leases, hand them back on stop.

``loop.py`` holds the life of a worker (read ``Worker.run`` top to bottom); the helper threads
each have a module: ``reporter.py`` (the one path that writes outcomes), ``monitor.py`` (leases,
time-outs, the registry beat of ``registration.py``), ``helpers.py`` (supervision: no helper
thread dies silently); ``runs.py`` is the in-flight table, ``joblog.py`` the one log line per job
outcome and ``options.py`` the typed settings.
"""

from .loop import EXIT_HELPER_FAILED, EXIT_STOP_REQUESTED, EXIT_STUCK, Worker
from .options import WorkerOptions

__all__ = ["EXIT_HELPER_FAILED", "EXIT_STOP_REQUESTED", "EXIT_STUCK", "Worker", "WorkerOptions"]
