"""The labels table: an Apache Iceberg table (PyIceberg) that the nightly job commits to once per run.

Where it lives (:class:`TableSettings`):
- the **catalog** is a setting, not code: ``sqlite:///path/catalog.db`` (the embedded default: for a
  local ``--out`` it is ``<out>/catalog.db``), ``postgresql+psycopg2://user:pass@host/db`` (a catalog
  every pod of a cluster reaches) — both PyIceberg's SQL catalog — or an ``http(s)://`` Iceberg REST
  catalog. Command line ``--catalog``, environment ``RAYPIPE_CATALOG``;
- the **data** (Parquet files and Iceberg metadata) under ``<out>/table/``, local or ``s3://`` (PyIceberg's
  FileIO, with the same endpoint and credentials as the rest of raypipe);
- the table ``raypipe.labels`` (``--table``).

What makes it safe:
- **one commit per run**: Ray Data's workers write data files; the driver commits them in one Iceberg
  transaction (:class:`LabelsSink`), which also deletes the earlier rows of every unit being replaced.
  Until that commit no row of the run is visible; a killed run leaves only unreferenced files, which
  :func:`remove_orphans` deletes later (files of this table's data folder only);
- **"what is done" is read from the table** (projected ``unit``, ``unit_fingerprint``, ``error_kind``),
  so rows and bookkeeping cannot disagree;
- **one writer at a time**: :class:`~raypipe.labels.lease.WriterLease`, a row in a small SQL table beside the catalog (or in
  ``RAYPIPE_LEASE_DB``), taken with an atomic insert/update, renewed by a heartbeat, expiring when its
  holder dies; and the commit itself asserts that the table has not moved since the run read it
  (Iceberg's optimistic concurrency), so even an expired-lease writer cannot duplicate rows;
- **a catalog away for a while** (an SQLite file locked by another program, a PostgreSQL server restarting)
  is waited out: every catalog and lease statement is retried with backoff for up to ``CATALOG_PATIENCE``
  seconds (``RAYPIPE_CATALOG_PATIENCE``, default 150), then the run fails with one line naming the catalog
  and nothing half-done; the next run completes.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from raypipe.storage import StorageOptions, filesystem, is_remote, redact, split_userinfo

DEFAULT_TABLE = "raypipe.labels"


class TableError(RuntimeError):
    """The labels table cannot be reached or used (catalog settings, a busy lease, a conflict)."""


class NoLabelsTable(TableError):
    """Nothing has been labelled at that place yet."""


class LeaseBusy(TableError):
    pass


class LeaseLost(TableError):
    pass


class CatalogUnavailable(TableError):
    """The catalog's (or the lease's) database did not answer within ``CATALOG_PATIENCE`` seconds."""


CATALOG_PATIENCE = float(os.environ.get("RAYPIPE_CATALOG_PATIENCE", "150"))
SQLITE_BUSY_TIMEOUT = 30.0  # seconds SQLite itself waits for a lock before each retry
# the errors of a catalog database or of the table's object storage that is away for a while (locked,
# restarting, unreachable), not of a wrong setting
TRANSIENT_CATALOG_ERRORS = (
    "database is locked", "database table is locked", "could not connect to server", "Connection refused",
    "server closed the connection", "terminating connection", "the database system is", "connection already closed",
    "SSL connection has been closed", "Connection reset", "connection to server", "timeout expired",
    "Could not connect to server", "NETWORK_CONNECTION", "Could not connect to the endpoint URL", "SlowDown",
    "ServiceUnavailable")


def transient_catalog_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a database away for a while.

    Examples:
        >>> transient_catalog_error(RuntimeError("(sqlite3.OperationalError) database is locked"))
        True
        >>> transient_catalog_error(RuntimeError("no such table: iceberg_tables"))
        False
    """
    from raypipe.errors import causes

    for cause in causes(exc):
        if isinstance(cause, TableError):
            return False
        if any(text in str(cause) for text in TRANSIENT_CATALOG_ERRORS):
            return True
    return False


def retry_catalog(fn, what: str, *, where: str = "", patience: float | None = None):
    """``fn()``, retried with backoff (0.5 s doubling to 15 s) while it fails with a
    :func:`transient_catalog_error`, for up to ``patience`` seconds (``CATALOG_PATIENCE``); then
    :class:`CatalogUnavailable` in one line (``what`` could not be done, ``where``: the catalog, redacted)."""
    patience = CATALOG_PATIENCE if patience is None else patience
    deadline, delay = time.monotonic() + patience, 0.5
    while True:
        try:
            return fn()
        except Exception as exc:
            if not transient_catalog_error(exc):
                raise
            if time.monotonic() + delay > deadline:
                reason = redact(str(exc)).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                raise CatalogUnavailable(f"could not {what}: the catalog{' ' + where if where else ''} did not "
                                         f"answer for {patience:.0f} s ({reason}); nothing committed, the next run "
                                         "completes") from exc
            time.sleep(delay)
            delay = min(delay * 2, 15.0)


def engine_url(url: str) -> str:
    """A SQL catalog or lease URL as raypipe connects to it: SQLite waits ``SQLITE_BUSY_TIMEOUT`` s for a
    lock held by another program (unless the URL sets its own ``timeout``).

    Examples:
        >>> engine_url("sqlite:////data/labels/catalog.db")
        'sqlite:////data/labels/catalog.db?timeout=30'
        >>> engine_url("postgresql+psycopg2://u@db/labels")
        'postgresql+psycopg2://u@db/labels'
    """
    if url.startswith("sqlite:") and "timeout=" not in url:
        return f"{url}{'&' if '?' in url else '?'}timeout={min(SQLITE_BUSY_TIMEOUT, CATALOG_PATIENCE):g}"
    return url


@dataclass
class TableSettings:
    """Where the labels table lives (see the module docs)."""

    output_uri: str
    catalog: str | None = None
    table: str = DEFAULT_TABLE
    storage_options: StorageOptions = None
    lease_db: str | None = None

    def __post_init__(self) -> None:
        self.output_uri, user, password = split_userinfo(self.output_uri.rstrip("/"))
        if user:
            self.storage_options = {**(self.storage_options or {}), "key": user, "secret": password}
        self.catalog = self.catalog or os.environ.get("RAYPIPE_CATALOG") or self._default_catalog()
        self.lease_db = self.lease_db or os.environ.get("RAYPIPE_LEASE_DB")
        split_userinfo(self.catalog, user_is_secret=False)  # its password is never printed
        if "." not in self.table:
            raise TableError(f"table {self.table!r}: give it as namespace.name (e.g. {DEFAULT_TABLE})")

    @property
    def is_s3(self) -> bool:
        return is_remote(self.output_uri)

    def _default_catalog(self) -> str:
        if self.is_s3:
            raise TableError(f"{redact(self.output_uri)}: an s3:// output needs a catalog every job reaches: "
                             "--catalog postgresql+psycopg2://user:pass@host/db (or RAYPIPE_CATALOG), or a "
                             "local sqlite:///path/catalog.db on the machine that runs the job")
        _, path = filesystem(self.output_uri)
        return f"sqlite:///{path}/catalog.db"

    @property
    def location(self) -> str:
        if self.is_s3:
            return f"{self.output_uri}/table"
        _, path = filesystem(self.output_uri)
        return f"file://{path}/table"

    def file_io_properties(self) -> dict[str, str]:
        """PyIceberg FileIO settings for S3 (endpoint and credentials; nothing is printed)."""
        if not self.is_s3:
            return {}
        options = self.storage_options or {}
        env = os.environ
        props = {
            "s3.endpoint": options.get("endpoint_url") or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL"),
            "s3.access-key-id": options.get("key") or env.get("AWS_ACCESS_KEY_ID"),
            "s3.secret-access-key": options.get("secret") or env.get("AWS_SECRET_ACCESS_KEY"),
            "s3.session-token": options.get("token") or env.get("AWS_SESSION_TOKEN"),
            "s3.region": (options.get("client_kwargs") or {}).get("region_name") or env.get("AWS_DEFAULT_REGION")
            or "us-east-1",
        }
        return {k: v for k, v in props.items() if v}

    def catalog_properties(self) -> dict[str, Any]:
        """``load_catalog`` keyword arguments (also what Ray Data's Iceberg writer takes)."""
        kind = "rest" if self.catalog.startswith(("http://", "https://")) else "sql"
        if kind == "sql" and self.catalog.startswith("sqlite:///"):
            folder = os.path.dirname(self.catalog[len("sqlite:///"):])
            if folder:
                os.makedirs(folder, exist_ok=True)
        sql = {"pool_pre_ping": "true"} if kind == "sql" else {}
        return {"name": "raypipe", "type": kind, "uri": engine_url(self.catalog) if kind == "sql" else self.catalog,
                "warehouse": self.location, **sql, **self.file_io_properties()}

    def lease_url(self) -> str:
        if self.lease_db:
            return self.lease_db
        if self.catalog.startswith(("http://", "https://")):
            raise TableError("a REST catalog has no database for the writer lease: set RAYPIPE_LEASE_DB to a "
                             "SQL URL every job reaches (postgresql+psycopg2://...)")
        return self.catalog

    def describe(self) -> str:
        return f"{self.table} in {redact(self.catalog)} (data {redact(self.location)})"


# --- the table ----------------------------------------------------------------------------------
def load_catalog(settings: TableSettings):
    from pyiceberg.catalog import load_catalog as _load

    props = settings.catalog_properties()
    name = props.pop("name")
    for attempt in range(5):
        try:
            return retry_catalog(lambda: _load(name, **props), "open the catalog", where=redact(settings.catalog))
        except TableError:
            raise
        except Exception as exc:
            if attempt < 4 and created_meanwhile(exc):  # two first runs made the catalog's tables at once
                time.sleep(0.3)
                continue
            raise TableError(f"cannot open the catalog {redact(settings.catalog)}: {redact(exc)}") from exc
    raise AssertionError("unreachable")


def created_meanwhile(exc: BaseException) -> bool:
    """Whether ``exc`` is the loser's error of two processes creating the same database table at once (a
    unique violation, or SQLite's "already exists"): reading again finds what the winner made.

    Examples:
        >>> created_meanwhile(RuntimeError("(sqlite3.OperationalError) table iceberg_tables already exists"))
        True
        >>> created_meanwhile(RuntimeError("(sqlite3.OperationalError) unable to open database file"))
        False
    """
    from sqlalchemy.exc import IntegrityError

    from raypipe.errors import causes

    return any(isinstance(c, IntegrityError) or "already exists" in str(c) for c in causes(exc))


# a commit that finds the table moved is refused, never rebased onto the other writer's snapshot (PyIceberg
# would retry it so by default: two overlapping runs would then both add their rows)
TABLE_PROPERTIES = {"write.metadata.delete-after-commit.enabled": "true", "write.metadata.previous-versions-max": "50",
                    "commit.retry.num-retries": "0"}


def open_table(settings: TableSettings, schema: pa.Schema | None = None, *, create: bool = False):
    """The labels table; created (with ``schema``) when ``create`` and absent. Creating the catalog's tables,
    the namespace and the table is idempotent under concurrency: two first runs at the same moment race to
    create them, and the loser (an "already exists" or a primary-key error from the catalog's database) reads
    what the winner made. A catalog away for a while is waited out (:func:`retry_catalog`)."""
    return retry_catalog(lambda: _open_table(settings, schema, create), "open the labels table",
                         where=redact(settings.catalog))


def _open_table(settings: TableSettings, schema: pa.Schema | None, create: bool):
    from pyiceberg.exceptions import NoSuchTableError

    namespace = settings.table.rsplit(".", 1)[0]
    for attempt in range(6):
        try:
            catalog = load_catalog(settings)
            try:
                table = catalog.load_table(settings.table)
            except NoSuchTableError:
                if not create:
                    raise NoLabelsTable(f"no labels table {settings.describe()}: nothing has been labelled there "
                                        "yet") from None
                catalog.create_namespace_if_not_exists(namespace)
                table = catalog.create_table_if_not_exists(settings.table, schema=schema, location=settings.location,
                                                           properties={"format-version": "2", **TABLE_PROPERTIES})
            if table.location().rstrip("/") != settings.location.rstrip("/"):
                raise TableError(f"the catalog {redact(settings.catalog)} already has a table {settings.table} for "
                                 f"another output ({redact(table.location())}, not {redact(settings.location)}): "
                                 "give this output its own --table name, or use that output")
            missing = {k: v for k, v in TABLE_PROPERTIES.items() if table.properties.get(k) != v}
            if create and missing:  # a table made by an earlier raypipe
                with table.transaction() as txn:
                    txn.set_properties(missing)
                table = catalog.load_table(settings.table)
            have = {f.name for f in table.schema().fields}
            if create and schema is not None and not set(schema.names) <= have:  # columns a later raypipe added
                with table.update_schema() as update:  # (optional columns: the earlier rows read them as null)
                    update.union_by_name(schema)
                table = catalog.load_table(settings.table)
            return table
        except TableError:  # no table, or the catalog away for longer than its patience
            raise
        except Exception as exc:  # noqa: BLE001 - a concurrent creation surfaces as various errors: read again
            if transient_catalog_error(exc):
                raise
            if attempt == 5:
                raise TableError(f"cannot open or create the labels table {settings.describe()}: {redact(exc)}") \
                    from exc
            time.sleep(0.3 * (attempt + 1))
    raise AssertionError("unreachable")


def done_units(table, snapshot_id: int | None) -> dict[str, dict]:
    """Per unit URI: ``fingerprint``, ``transient`` (has a row failed for a reason that may pass),
    ``errors`` (has error rows), ``models`` — from the table's snapshot (two or three projected columns)."""
    if snapshot_id is None:
        return {}
    scan = table.scan(selected_fields=("unit", "unit_fingerprint", "error_kind", "status", "model"),
                      snapshot_id=snapshot_id)
    data = scan.to_arrow()
    out: dict[str, dict] = {}
    for unit, fp, kind, status, model in zip(*(data[c].to_pylist() for c in
                                              ("unit", "unit_fingerprint", "error_kind", "status", "model"))):
        entry = out.setdefault(unit, {"fingerprint": fp, "transient": False, "errors": False, "models": set()})
        entry["transient"] |= kind == "transient"
        entry["errors"] |= status != "ok"
        entry["models"].add(model)
    return out


def read_labels(output_uri: str, storage_options: StorageOptions = None, *, catalog: str | None = None,
                table: str = DEFAULT_TABLE, as_of: int | str | dt.datetime | None = None,
                columns: list[str] | None = None, row_filter: str | None = None) -> pa.Table:
    """The current labelled rows of the table under ``output_uri`` as a pyarrow Table.

    ``as_of``: a snapshot id, or a time (``datetime`` or ISO text) to read the table as it was then;
    ``columns``: only these; ``row_filter``: a PyIceberg filter text such as ``"status == 'ok'"``.
    """
    settings = TableSettings(output_uri, catalog=catalog, table=table, storage_options=storage_options)
    tbl = open_table(settings)
    snapshot_id = None
    if isinstance(as_of, int):
        snapshot_id = as_of
    elif as_of is not None:
        when = as_of if isinstance(as_of, dt.datetime) else dt.datetime.fromisoformat(str(as_of))
        if when.tzinfo is None:
            when = when.astimezone()
        snapshot = tbl.snapshot_as_of_timestamp(int(when.timestamp() * 1000))
        if snapshot is None:
            raise TableError(f"the labels table has no snapshot at or before {when.isoformat()}")
        snapshot_id = snapshot.snapshot_id
    kwargs: dict[str, Any] = {"snapshot_id": snapshot_id} if snapshot_id is not None else {}
    if columns:
        kwargs["selected_fields"] = tuple(columns)
    if row_filter:
        kwargs["row_filter"] = row_filter
    return tbl.scan(**kwargs).to_arrow()


def export_labels(output_uri: str, destination: str, storage_options: StorageOptions = None, **kwargs) -> int:
    """The current rows (or, with ``as_of=``, the rows of then) as one plain Parquet file at
    ``destination`` (a path or ``s3://``, written atomically); returns the row count. ``kwargs``: those of
    :func:`read_labels` (``catalog``, ``table``, ``as_of``, ``columns``, ``row_filter``). Raises TableError
    when there is no table."""
    import io

    import pyarrow.parquet as pq

    from raypipe.storage import write_bytes_atomic

    rows = read_labels(output_uri, storage_options, **kwargs)
    sink = io.BytesIO()
    pq.write_table(rows, sink, compression="zstd")
    fs, path = filesystem(destination, storage_options)
    write_bytes_atomic(fs, path, sink.getvalue())
    return rows.num_rows


def remove_orphans(table, settings: TableSettings, older_than_s: float = 3600.0, *, metadata: bool = False) -> int:
    """Delete data files under this table's ``data/`` folder that no snapshot references and that are
    older than ``older_than_s`` (files of a killed run, or of expired snapshots); with ``metadata``, also the
    manifests and manifest lists (``metadata/*.avro``) no remaining snapshot references. Only raypipe's own
    table files are touched."""
    has_snapshots = table.current_snapshot() is not None
    referenced = set(table.inspect.all_files().column("file_path").to_pylist()) if has_snapshots else set()
    folders = [("data", ".parquet")]
    if metadata and has_snapshots:
        referenced |= {s.manifest_list for s in table.metadata.snapshots}
        referenced |= set(table.inspect.all_manifests().column("path").to_pylist())
        folders.append(("metadata", ".avro"))
    fs, base = filesystem(settings.location.removeprefix("file://"), settings.storage_options)
    scheme = "s3://" if settings.is_s3 else "file://"
    now = time.time()
    removed = 0
    for folder, suffix in folders:
        if not fs.exists(f"{base}/{folder}"):
            continue
        for path, info in fs.find(f"{base}/{folder}", detail=True).items():
            if not path.endswith(suffix) or f"{scheme}{path}" in referenced or path in referenced:
                continue
            modified = info.get("mtime") or info.get("LastModified")
            if isinstance(modified, dt.datetime):
                modified = modified.timestamp()
            if modified is not None and now - float(modified) > older_than_s:
                fs.rm(path)
                removed += 1
    return removed


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)
