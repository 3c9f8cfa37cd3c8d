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
  (Iceberg's optimistic concurrency), so even an expired-lease writer cannot duplicate rows.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from raypipe.storage import StorageOptions, filesystem, is_remote, redact, register_secret, split_userinfo

DEFAULT_TABLE = "raypipe.labels"


class TableError(RuntimeError):
    """The labels table cannot be reached or used (catalog settings, a busy lease, a conflict)."""


class NoLabelsTable(TableError):
    """Nothing has been labelled at that place yet."""


class LeaseBusy(TableError):
    pass


class LeaseLost(TableError):
    pass


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
        register_secret(split_userinfo(self.catalog)[2])
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
        return {"name": "raypipe", "type": kind, "uri": self.catalog, "warehouse": self.location,
                **self.file_io_properties()}

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
    try:
        return _load(props.pop("name"), **props)
    except Exception as exc:
        raise TableError(f"cannot open the catalog {redact(settings.catalog)}: {redact(exc)}") from exc


def open_table(settings: TableSettings, schema: pa.Schema | None = None, *, create: bool = False):
    """The labels table; created (with ``schema``) when ``create`` and absent. Creating the catalog's tables,
    the namespace and the table is idempotent under concurrency: two first runs at the same moment race to
    create them, and the loser (an "already exists" or a primary-key error from the catalog's database) reads
    what the winner made."""
    from pyiceberg.exceptions import NoSuchTableError

    namespace = settings.table.rsplit(".", 1)[0]
    for attempt in range(6):
        try:
            catalog = load_catalog(settings)
            try:
                return catalog.load_table(settings.table)
            except NoSuchTableError:
                if not create:
                    raise NoLabelsTable(f"no labels table {settings.describe()}: nothing has been labelled there "
                                        "yet") from None
            catalog.create_namespace_if_not_exists(namespace)
            return catalog.create_table_if_not_exists(
                settings.table, schema=schema, location=settings.location,
                properties={"format-version": "2", "write.metadata.delete-after-commit.enabled": "true",
                            "write.metadata.previous-versions-max": "50"})
        except NoLabelsTable:
            raise
        except Exception as exc:  # noqa: BLE001 - a concurrent creation surfaces as various errors: read again
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


def remove_orphans(table, settings: TableSettings, older_than_s: float = 3600.0) -> int:
    """Delete data files under this table's ``data/`` folder that no snapshot references and that are
    older than ``older_than_s`` (files of a killed run). Only raypipe's own table files are touched."""
    referenced = set(table.inspect.all_files().column("file_path").to_pylist()) if table.current_snapshot() else set()
    fs, base = filesystem(settings.location.removeprefix("file://"), settings.storage_options)
    data = f"{base}/data"
    if not fs.exists(data):
        return 0
    scheme = "s3://" if settings.is_s3 else "file://"
    now = time.time()
    removed = 0
    for path, info in fs.find(data, detail=True).items():
        if not path.endswith(".parquet") or f"{scheme}{path}" in referenced or path in referenced:
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
