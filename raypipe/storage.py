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
    register_options(options)
    uri, user, password = split_userinfo(uri)
    if user:  # credentials written into the URI: used, never printed
        options.setdefault("key", user)
        options.setdefault("secret", password)
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


def is_remote(uri: str | os.PathLike) -> bool:
    """Whether ``uri`` names object storage (``s3://``) rather than a local path."""
    return str(uri).startswith("s3://")


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


_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/@\s]+)@")
_SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID", "RAYPIPE_CATALOG_PASSWORD")
_KNOWN_SECRETS: set[str] = set()


def register_secret(*values: object) -> None:
    """Remember secret values (e.g. from ``storage_options`` or a catalog URL) so :func:`redact` masks them."""
    for value in values:
        if isinstance(value, str) and len(value) >= 4:
            _KNOWN_SECRETS.add(value)


def register_options(storage_options: StorageOptions) -> None:
    """Register the secret-looking values of s3fs options (key, secret, token, password...)."""
    for name, value in (storage_options or {}).items():
        if any(word in name.lower() for word in ("key", "secret", "token", "password")):
            register_secret(value)


def split_userinfo(uri: str, *, user_is_secret: bool = True) -> tuple[str, str | None, str | None]:
    """``s3://KEY:SECRET@bucket/p`` -> (``s3://bucket/p``, KEY, SECRET); the values are registered as
    secrets so that nothing prints them (the user only where it is one, as an S3 key id is; a database
    user name is not: ``user_is_secret=False``)."""
    match = _USERINFO.match(uri)
    if not match:
        return uri, None, None
    user, _, password = match.group(2).partition(":")
    register_secret(*((user, password) if user_is_secret else (password,)))
    return match.group(1) + uri[match.end():], user or None, password or None


def redact(text: str) -> str:
    """``text`` with credentials masked: the user-info of URLs (``scheme://user:pass@``), the values of
    the AWS credential variables and every secret registered by :func:`register_secret`. Anything else,
    such as a folder named ``token=abc``, is left as it is (stored paths must stay true)."""
    text = _USERINFO.sub(r"\1***@", str(text))
    secrets = set(_KNOWN_SECRETS)
    secrets.update(v for v in (os.environ.get(n) for n in _SECRET_VARIABLES) if v and len(v) >= 4)
    for value in sorted(secrets, key=len, reverse=True):
        text = text.replace(value, "***")
    return text


class StorageError(RuntimeError):
    """Object storage that cannot be used: no credentials, an endpoint that does not answer, a bucket that
    is not there. The message names the URI and the fix."""


def check_reachable(uri: str, storage_options: StorageOptions = None) -> None:
    """Fail early, in one line, where an ``s3://`` ``uri`` cannot be used: no credentials, an endpoint that
    does not answer, a bucket that does not exist (StorageError). Nothing is written; a local path passes."""
    if not is_remote(uri):
        return
    quick = {"connect_timeout": 5, "read_timeout": 20, "retries": {"max_attempts": 2, "mode": "standard"}}
    fs, path = filesystem(uri, {**(storage_options or {}), "config_kwargs": quick, "skip_instance_cache": True})
    bucket = path.split("/", 1)[0]
    try:
        fs.ls(bucket, refresh=True)
    except FileNotFoundError:
        raise StorageError(f"{redact(uri)}: the bucket {bucket!r} does not exist at "
                           f"{_endpoint(storage_options)}") from None
    except Exception as exc:  # noqa: BLE001 - botocore's errors have many types; one line says which
        name = type(exc).__name__
        if "Credentials" in name or "credential" in str(exc).lower():
            raise StorageError(f"{redact(uri)}: no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                               "(or ~/.aws/credentials), and AWS_ENDPOINT_URL or --s3-endpoint for a non-AWS "
                               "endpoint") from None
        if "Connect" in name or "Endpoint" in name or isinstance(exc, (ConnectionError, OSError, TimeoutError)):
            raise StorageError(f"{redact(uri)}: the S3 endpoint {_endpoint(storage_options)} does not answer "
                               f"({name}); is it up, and is AWS_ENDPOINT_URL / --s3-endpoint right?") from None
        raise StorageError(f"{redact(uri)}: cannot be read ({name}: {redact(str(exc))[:200]})") from None


def _endpoint(storage_options: StorageOptions) -> str:
    return ((storage_options or {}).get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL") or "AWS")
