"""One writer at a time: the labels table's writer lease, a row in a small SQL table beside the catalog (or
in ``RAYPIPE_LEASE_DB``), taken with an atomic insert/update, renewed by a heartbeat, expiring when its
holder dies, and checked inside the commit itself (:meth:`WriterLease.fenced`): a holder frozen past its
lease's life while another job took it over wakes up to find its commit refused.

The lease's database may go away for a while (a PostgreSQL restart, an SQLite file locked by another
program): every statement is retried with backoff for up to ``CATALOG_PATIENCE`` seconds."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid

from raypipe.labels.table import LeaseBusy, LeaseLost, created_meanwhile, engine_url, retry_catalog


class WriterLease:
    """A lease on the table, held in ``raypipe_writer_lease`` (name, holder, host, pid, expires_at) of
    a SQL database. Taken atomically (insert, or an update that succeeds only when the lease is free,
    expired, or held by a dead process of this host); renewed every ``ttl / 3`` s by a thread."""

    def __init__(self, url: str, name: str, ttl: float = 120.0) -> None:
        import sqlalchemy as sa

        self.name, self.ttl = name, ttl
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.url = engine_url(url)
        self.engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
        meta = sa.MetaData()
        self.rows = sa.Table("raypipe_writer_lease", meta,
                             sa.Column("name", sa.String(255), primary_key=True),
                             sa.Column("holder", sa.String(255), nullable=False),
                             sa.Column("host", sa.String(255)), sa.Column("pid", sa.Integer),
                             sa.Column("expires_at", sa.Float, nullable=False))
        for attempt in range(5):  # first jobs at the same moment race to create it: the loser's CREATE fails
            try:                  # ("already exists" in SQLite, a unique violation in PostgreSQL), then finds it
                retry_catalog(lambda: meta.create_all(self.engine, checkfirst=True), "create the lease table")
                break
            except sa.exc.DBAPIError as exc:
                if attempt == 4 or not created_meanwhile(exc):
                    raise
                time.sleep(0.3)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False

    def _try(self) -> bool:
        import sqlalchemy as sa

        now = time.time()
        values = {"holder": self.holder, "host": socket.gethostname(), "pid": os.getpid(),
                  "expires_at": now + self.ttl}
        with self.engine.begin() as conn:
            try:
                conn.execute(sa.insert(self.rows).values(name=self.name, **values))
                return True
            except sa.exc.IntegrityError:
                pass
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(self.rows).where(self.rows.c.name == self.name)).first()
            if row is None:
                return False
            free = row.expires_at < now or (row.host == socket.gethostname() and not _alive(row.pid))
            if not free:
                return False
            result = conn.execute(sa.update(self.rows).where(self.rows.c.name == self.name,
                                                             self.rows.c.holder == row.holder).values(**values))
            return result.rowcount == 1

    def holder_text(self) -> str:
        import sqlalchemy as sa

        with self.engine.connect() as conn:
            row = conn.execute(sa.select(self.rows).where(self.rows.c.name == self.name)).first()
        if row is None:
            return "nobody"
        left = row.expires_at - time.time()
        return f"{row.holder} (expires in {left:.0f} s unless renewed)"

    def acquire(self, wait: float = 900.0, progress=None) -> "WriterLease":
        deadline = time.time() + wait
        said = False
        while not retry_catalog(self._try, f"take the writer lease on {self.name}"):
            if time.time() >= deadline:
                raise LeaseBusy(f"another raypipe job is writing {self.name}: lease held by {self.holder_text()}; "
                                f"waited {wait:.0f} s (--lease-wait)")
            if progress and not said:
                progress(f"waiting for the writer lease on {self.name}, held by {self.holder_text()}")
                said = True
            time.sleep(min(2.0, max(0.1, deadline - time.time())))
        self._thread = threading.Thread(target=self._heartbeat, name="raypipe-lease", daemon=True)
        self._thread.start()
        return self

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self._extend(self.engine)
            except LeaseLost:  # checked again before and inside the commit
                self.lost = True
                return
            except Exception:  # noqa: BLE001 - the database away for a moment: try at the next beat
                continue

    def _extend(self, bind) -> None:
        """Extend the lease if this job still holds it (LeaseLost otherwise), on ``bind`` (an engine, or
        the connection of a commit in progress)."""
        import sqlalchemy as sa

        statement = (sa.update(self.rows).where(self.rows.c.name == self.name, self.rows.c.holder == self.holder)
                     .values(expires_at=time.time() + self.ttl))
        if isinstance(bind, sa.engine.Engine):
            with bind.begin() as conn:
                result = conn.execute(statement)
        else:
            result = bind.execute(statement)
        if result.rowcount != 1:
            self.lost = True
            raise LeaseLost(f"the writer lease on {self.name} was lost (it expired and another job took it over): "
                            "nothing committed; the next run labels these units")

    def renew(self) -> None:
        """Extend the lease now; LeaseLost when another job has taken it over."""
        retry_catalog(lambda: self._extend(self.engine), f"renew the writer lease on {self.name}")

    @contextlib.contextmanager
    def fenced(self, catalog):
        """Within: every commit of ``catalog`` (a PyIceberg SQL catalog in the lease's database, the default)
        first extends this lease **in the same database transaction**, and is refused (LeaseLost, rolled
        back) when another job holds it — the check cannot be separated from the commit by a pause of this
        process. A catalog elsewhere (REST, or ``RAYPIPE_LEASE_DB`` set apart) gets the lease renewed just
        before, and Iceberg's own check that the table has not moved since the run planned."""
        from sqlalchemy import event

        engine = getattr(catalog, "engine", None)
        if engine is None or not _same_database(engine.url, self.engine.url):
            self.renew()
            yield
            return
        check = self._extend
        event.listen(engine, "commit", check)
        try:
            yield
        finally:
            event.remove(engine, "commit", check)

    def release(self) -> None:
        import sqlalchemy as sa

        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

        def delete():
            with self.engine.begin() as conn:
                conn.execute(sa.delete(self.rows).where(self.rows.c.name == self.name,
                                                        self.rows.c.holder == self.holder))

        try:
            retry_catalog(delete, f"release the writer lease on {self.name}", patience=10)
        except Exception:  # noqa: BLE001 - never hides the run's own error: the lease expires after ttl s
            pass
        finally:
            self.engine.dispose()


def _same_database(a, b) -> bool:
    return (a.get_backend_name(), a.host, a.port, a.database) == (b.get_backend_name(), b.host, b.port, b.database)


def _alive(pid: int | None) -> bool:
    if not pid:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
