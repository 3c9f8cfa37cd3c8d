"""raypipe's own progress: a tqdm bar on a terminal, a line every ``every`` seconds otherwise (cron logs).

Ray workers report finished stacks to a small counter actor; a thread of the driver polls it::

    with Progress(total=120, what="stacks") as progress:     # total None: no ETA
        dataset.map_batches(..., fn_kwargs={"counter": progress.counter}) ...

Lines look like ``label: 40 of 120 stacks, 2.1/s, ETA 38 s``.
"""

from __future__ import annotations

import sys
import threading
import time


class _Counter:
    def __init__(self) -> None:
        self.n = 0

    def add(self, k: int) -> None:
        self.n += k

    def value(self) -> int:
        return self.n


def count(counter, n: int) -> None:
    """Called in a worker: ``n`` more items done (fire and forget; a missing counter is fine)."""
    if counter is not None:
        counter.add.remote(n)


class Progress:
    def __init__(self, total: int | None, *, what: str = "stacks", label: str = "label", every: float = 15.0,
                 stream=None, enabled: bool = True) -> None:
        self.total, self.what, self.label, self.every = total, what, label, every
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.counter = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar = None
        self._start = time.perf_counter()

    def __enter__(self) -> "Progress":
        if not self.enabled:
            return self
        import ray

        self.counter = ray.remote(num_cpus=0)(_Counter).remote()
        if self.stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, unit=self.what[:-1] if self.what.endswith("s") else self.what,
                             desc=self.label, file=self.stream, dynamic_ncols=True)
        self._thread = threading.Thread(target=self._poll, name="raypipe-progress", daemon=True)
        self._thread.start()
        return self

    def _value(self) -> int:
        import ray

        try:
            return int(ray.get(self.counter.value.remote(), timeout=5))
        except Exception:  # noqa: BLE001 - progress must never break a job
            return -1

    def line(self, n: int) -> str:
        elapsed = max(time.perf_counter() - self._start, 1e-6)
        rate = n / elapsed
        text = f"{self.label}: {n}" + (f" of {self.total}" if self.total else "") + f" {self.what}, {rate:.1f}/s"
        if self.total and rate > 0 and n < self.total:
            text += f", ETA {(self.total - n) / rate:.0f} s"
        return text

    def _poll(self) -> None:
        last_line = time.perf_counter()
        shown = 0
        while not self._stop.wait(0.5 if self._bar is not None else 1.0):
            n = self._value()
            if n < 0:
                continue
            if self._bar is not None:
                self._bar.update(n - shown)
                shown = n
            elif time.perf_counter() - last_line >= self.every and n > shown:
                print(self.line(n), file=self.stream, flush=True)
                shown, last_line = n, time.perf_counter()

    def __exit__(self, *exc) -> None:
        if not self.enabled:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._bar is not None:
            n = self._value()
            if n >= 0:
                self._bar.update(max(0, n - self._bar.n))
            self._bar.close()
        import ray

        try:
            ray.kill(self.counter)
        except Exception:  # noqa: BLE001
            pass
