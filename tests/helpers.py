"""Helpers that build test inputs: synthetic stacks and image folders, poison files, reading rows back."""

from __future__ import annotations

import struct
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image


def synthetic_stack(n: int = 10, size: int = 64, seed: int = 0) -> np.ndarray:
    """(n, size, size) float32: blobs whose contrast grows towards the closest image (index 0)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    base = np.zeros((size, size))
    for _ in range(6):
        cy, cx = rng.uniform(0.2 * size, 0.8 * size, 2)
        base += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (size / 16) ** 2))
    return np.stack([base * (1.0 - 0.08 * k) for k in range(n)]).astype(np.float32)


def save_grey(path: Path, image: np.ndarray, bits: int = 8) -> None:
    scaled = (image - image.min()) / max(float(np.ptp(image)), 1e-9)
    if bits == 16:
        Image.fromarray((scaled * 65535).astype(np.uint16)).save(path)
    else:
        Image.fromarray((scaled * 255).astype(np.uint8)).save(path)


def image_folder(folder: Path, n: int = 10, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k, image in enumerate(synthetic_stack(n, 48, seed)):
        save_grey(folder / f"img_{k}.png", image)
    return folder


def rows_of(out: Path, catalog: str | None = None) -> list[dict]:
    from raypipe.labels.table import read_labels

    return read_labels(str(out), catalog=catalog, columns=["unit", "scan_id", "source", "status", "error",
                                                          "error_kind", "n_images", "run_id"]).to_pylist()


def once_each(rows: list[dict]) -> bool:
    counts = Counter((r["unit"], r["source"]) for r in rows)
    return all(c == 1 for c in counts.values())


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that declares width x height and holds a tiny (truncated) image stream."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
                     + chunk(b"IEND", b""))


def moto_server(port: int = 0, bucket: str | None = None):
    """moto's S3 server on 127.0.0.1 (a free port unless ``port``; its buckets live as long as this process,
    so a server started again on the same port finds them); returns (server, storage options)."""
    import socket

    import boto3
    from moto.server import ThreadedMotoServer

    if not port:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    options = {"key": "testing-key-id", "secret": "testing-secret-value", "endpoint_url": f"http://127.0.0.1:{port}"}
    if bucket:
        boto3.client("s3", endpoint_url=options["endpoint_url"], aws_access_key_id=options["key"],
                     aws_secret_access_key=options["secret"], region_name="us-east-1").create_bucket(Bucket=bucket)
    return server, options
