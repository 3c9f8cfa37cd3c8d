"""Limits checked before a reader allocates anything, so that one poison file cannot stall a night.

Every reader asks :func:`regular_file` before it opens a file (symlinks are resolved; FIFOs, devices and
sockets are refused, since reading them can block forever or never end) and checks the sizes a file
*declares* (image header pixels, HDF5 dataset shape, NPZ array header, SXM ``SCAN_PIXELS``) against the
active :class:`ReadLimits` before reading the data. Past a limit it raises a :class:`ScanError` naming
the file and the limit. :func:`time_limit` bounds how long one unit's read may take.

The defaults fit real scans with a wide margin (a 1024 x 1024 stack of 40 images is 168 MB as float32)
and are set per process with the environment (``RAYPIPE_MAX_STACK_MB``, ``RAYPIPE_MAX_IMAGE_MPIXELS``,
``RAYPIPE_READ_SECONDS``) or per call with :func:`limits_scope`.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import signal
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from raypipe.errors import ScanError


@dataclass(frozen=True)
class ReadLimits:
    max_stack_bytes: int = 512 * 2**20  # the stack as float32
    max_image_pixels: int = 64 * 10**6  # one image, from its header
    max_images: int = 1000
    read_seconds: float = 120.0  # one unit's read

    @classmethod
    def from_env(cls) -> "ReadLimits":
        env = os.environ
        default = cls()
        return cls(
            max_stack_bytes=int(float(env.get("RAYPIPE_MAX_STACK_MB", default.max_stack_bytes / 2**20)) * 2**20),
            max_image_pixels=int(float(env.get("RAYPIPE_MAX_IMAGE_MPIXELS", default.max_image_pixels / 1e6)) * 1e6),
            max_images=int(env.get("RAYPIPE_MAX_IMAGES", default.max_images)),
            read_seconds=float(env.get("RAYPIPE_READ_SECONDS", default.read_seconds)),
        )


_ACTIVE: contextvars.ContextVar[ReadLimits | None] = contextvars.ContextVar("raypipe_read_limits", default=None)


def active() -> ReadLimits:
    return _ACTIVE.get() or ReadLimits.from_env()


@contextlib.contextmanager
def limits_scope(limits: ReadLimits | None) -> Iterator[ReadLimits]:
    token = _ACTIVE.set(limits or active())
    try:
        yield active()
    finally:
        _ACTIVE.reset(token)


def regular_file(path: str | Path) -> Path:
    """``path`` if it is (or links to) a regular file; ScanError otherwise."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode  # follows symlinks
    except OSError as exc:
        raise ScanError(path, f"cannot stat ({exc.strerror or exc})") from exc
    if not stat.S_ISREG(mode):
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "a folder" if stat.S_ISDIR(mode) else "not a file")
        raise ScanError(path, f"not a regular file ({kind}{', through a symlink' if path.is_symlink() else ''}); "
                              "refused")
    return path


def check_image(path: object, width: int, height: int) -> None:
    limits = active()
    if width <= 0 or height <= 0:
        raise ScanError(path, f"declares an empty or negative image size {width} x {height}")
    if width * height > limits.max_image_pixels:
        raise ScanError(path, f"declares {width} x {height} pixels, over the limit of "
                              f"{limits.max_image_pixels / 1e6:g} Mpixels per image (RAYPIPE_MAX_IMAGE_MPIXELS)")


def check_stack(path: object, n: int, height: int, width: int) -> None:
    """A stack of ``n`` images of ``height`` x ``width`` as float32 must fit the limits."""
    limits = active()
    if n > limits.max_images:
        raise ScanError(path, f"declares {n} images, over the limit of {limits.max_images} (RAYPIPE_MAX_IMAGES)")
    check_image(path, width, height)
    size = 4 * n * height * width
    if size > limits.max_stack_bytes:
        raise ScanError(path, f"declares a stack of {n} x {height} x {width} ({size / 2**20:.0f} MB as float32), "
                              f"over the limit of {limits.max_stack_bytes / 2**20:.0f} MB (RAYPIPE_MAX_STACK_MB)")


class ReadTimeout(TimeoutError):
    """A unit's read took longer than ``ReadLimits.read_seconds``."""


@contextlib.contextmanager
def time_limit(seconds: float | None, what: str) -> Iterator[None]:
    """Raise :class:`ReadTimeout` in the block after ``seconds`` (main thread on Unix; elsewhere the
    block runs unbounded, and only the other checks apply)."""
    if not seconds or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def _expire(signum, frame):
        raise ReadTimeout(f"{what}: reading took longer than {seconds:g} s (RAYPIPE_READ_SECONDS)")

    previous = signal.signal(signal.SIGALRM, _expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
