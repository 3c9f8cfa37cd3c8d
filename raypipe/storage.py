"""Local paths and ``s3://`` URIs through fsspec, with atomic whole-object writes.

S3 settings come from the standard AWS environment variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL`` for a
custom endpoint such as MinIO) or from explicit ``storage_options`` (``key``, ``secret``,
``endpoint_url``, ...; passed to s3fs). Credentials are never printed: :func:`redact` strips them from
anything that is logged.
"""

from __future__ import annotations

import os
import re
import uuid
from typing import Any

import fsspec
import pyarrow.fs as pafs

StorageOptions = dict[str, Any] | None


def filesystem(uri: str, storage_options: StorageOptions = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for ``uri`` and the path inside it (no scheme)."""
    options = dict(storage_options or {})
    if uri.startswith("s3://"):
        endpoint = options.pop("endpoint_url", None) or os.environ.get("AWS_ENDPOINT_URL_S3") \
            or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            options.setdefault("client_kwargs", {})["endpoint_url"] = endpoint
        fs = fsspec.filesystem("s3", **options)
        return fs, uri[len("s3://"):].rstrip("/")
    if "://" in uri and not uri.startswith("file://"):
        raise ValueError(f"unsupported storage URI {redact(uri)!r}: use a local path or s3://bucket/prefix")
    path = uri[len("file://"):] if uri.startswith("file://") else uri
    return fsspec.filesystem("file"), os.path.abspath(path)


def arrow_filesystem(fs: fsspec.AbstractFileSystem) -> pafs.FileSystem:
    """The same filesystem for pyarrow and Ray Data readers/writers."""
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs))


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def write_bytes_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write ``data`` so that readers see the whole object or nothing.

    Local: a hidden temporary file in the same folder, then a rename. S3: one PUT (an object appears
    only once its upload completes).
    """
    if _is_local(fs):
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    else:
        fs.pipe_file(path, data)


def exists(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    fs.invalidate_cache()
    return fs.exists(path)


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


_SECRET = re.compile(r"(?i)(secret|token|password|key)([\"']?\s*[:=]\s*[\"']?)[^\s,\"'}]+")


def redact(text: str) -> str:
    """``text`` with anything that looks like a credential value replaced by ``***``."""
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID"):
        value = os.environ.get(name)
        if value:
            text = text.replace(value, "***")
    return _SECRET.sub(r"\1\2***", text)
