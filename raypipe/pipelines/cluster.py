"""Connecting to Ray: the job's cluster (``RAY_ADDRESS``, ``ray job submit``, ``--address``) or a local Ray
started on first use, quiet unless asked.

Quiet means: Ray's own log lines (the driver's C++ core worker, Ray Data's execution reports and error
tracebacks, the dashboard and token banners) are kept off the console — they go to the command's log file
(:func:`native_stderr_to`) — so a cron log shows raypipe's progress, summary and one-line errors.
``verbose=True`` (the command line's ``-v``) leaves Ray's logging as Ray sets it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

# The local Ray raypipe starts (unless the environment says otherwise): idle task workers kept 10 minutes, a
# task killed for memory retried once, no metrics collected (nobody reads them without a dashboard), two
# malloc arenas a process; why each, with its measurement: docs/performance.md. A cluster's nodes take the
# worker-pool and malloc variables from k8s/settings.env.
LOCAL_RAY_ENV = {"RAY_idle_worker_killing_time_threshold_ms": "600000", "RAY_task_oom_retries": "1",
                 "RAY_enable_metrics_collection": "0", "MALLOC_ARENA_MAX": "2"}

_VERBOSE = False
_ADDRESS: str | None = None
_LOG: str | None = None  # the command's log file, where Ray's own lines go when quiet
_SIGTERM = None  # raypipe's own SIGTERM handler (the command line's), put back after ray.init takes it over


def configure(address: str | None = None) -> None:
    """The Ray address the next :func:`ensure_ray` connects to (None: the job's cluster or a local Ray)."""
    global _ADDRESS
    _ADDRESS = address


def set_verbose(verbose: bool) -> None:
    """Before Ray starts: keep Ray's own logs (``True``) or silence them (``False``, the default)."""
    global _VERBOSE
    _VERBOSE = verbose
    if not verbose:
        for name in ("ray", "ray.data", "ray.train", "ray.tune"):
            logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def native_stderr_to(path: str | os.PathLike):
    """Send what C/C++ code writes to file descriptor 2 (Ray's core worker, raylet messages) to ``path``
    while Python's ``sys.stderr`` (raypipe's messages, progress, errors) stays on the console."""
    global _LOG
    sys.stderr.flush()
    _LOG = str(path)
    saved = os.dup(2)
    console = os.fdopen(os.dup(saved), "w", buffering=1)
    previous = sys.stderr
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(target, 2)
    os.close(target)
    sys.stderr = console
    try:
        yield
    finally:
        _LOG = None
        sys.stderr = previous
        console.close()
        os.dup2(saved, 2)
        os.close(saved)


def keep_sigterm(handler) -> None:
    """Keep ``handler`` for SIGTERM (None: forget it) even once Ray's driver has installed its own (which exits
    the process at once, without unwinding the job: the lease would be left to expire)."""
    global _SIGTERM
    _SIGTERM = handler


def ensure_ray(address: str | None = None) -> None:
    """Connect to (or start) Ray once; a local Ray with ``LOCAL_RAY_ENV``."""
    import ray

    if ray.is_initialized():
        return
    address = address or _ADDRESS
    quiet = {} if _VERBOSE else {"logging_level": logging.ERROR, "log_to_driver": False}
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address, **quiet)
    else:
        for key, value in LOCAL_RAY_ENV.items():
            os.environ.setdefault(key, value)
        cpus = os.environ.get("RAYPIPE_LOCAL_CPUS")  # the local Ray's CPUs (default: the machine's)
        for attempt in (1, 2):  # a loaded machine may time a local Ray's start out: once more, then one line
            try:
                ray.init(include_dashboard=False, **({"num_cpus": int(cpus)} if cpus else {}), **quiet)
                break
            except Exception as exc:  # noqa: BLE001 - Ray raises several kinds here
                ray.shutdown()
                if attempt == 2 or "timed out" not in str(exc):
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    raise RuntimeError(f"the local Ray did not start ({first[:200]}); a loaded machine may time it "
                                       "out: run again, or join a running cluster (RAY_ADDRESS, --address)") from exc
    if _SIGTERM is not None:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _SIGTERM)
    if not _VERBOSE:
        from ray.data import DataContext

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        for name in ("ray", "ray.data", "ray.train", "ray.tune"):
            logging.getLogger(name).setLevel(logging.ERROR)
        _ray_data_logs_off_console()


def _ray_data_logs_off_console() -> None:
    """Ray Data logs its executor's errors (a traceback each) to the console; quiet, they go to the command's
    log file instead (Ray Data's own ``ray-data.log`` in the session folder keeps them too)."""
    logger = logging.getLogger("ray.data")
    for handler in list(logger.handlers):
        if not isinstance(handler, logging.FileHandler) and type(handler).__name__ != "SessionFileHandler":
            logger.removeHandler(handler)
    if _LOG and not any(getattr(h, "baseFilename", None) == os.path.abspath(_LOG) for h in logger.handlers):
        handler = logging.FileHandler(_LOG)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s -- %(message)s"))
        logger.addHandler(handler)
