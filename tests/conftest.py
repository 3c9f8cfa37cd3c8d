"""Shared fixtures: scan files written by the tests, and the optional real stacks in ../shared/."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

EXPERIMENTAL = Path(__file__).resolve().parents[1].parent / "shared" / "experimental"


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


@pytest.fixture(scope="session")
def experimental() -> Path:
    if not EXPERIMENTAL.is_dir():
        pytest.skip(f"real stacks not available ({EXPERIMENTAL} is absent outside the developers' checkout)")
    return EXPERIMENTAL


@pytest.fixture(scope="session")
def ray_cluster():
    """One real local Ray per test session; 4 logical CPUs so actor pools leave room for reads/writes."""
    import ray

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"POCL_MAX_PTHREAD_COUNT": "1"}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 endpoint on 127.0.0.1 (moto's server mode); yields storage options for raypipe."""
    import socket

    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    options = {"key": "testing-key-id", "secret": "testing-secret-value", "endpoint_url": endpoint}
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=options["key"],
                          aws_secret_access_key=options["secret"], region_name="us-east-1")
    client.create_bucket(Bucket="raypipe-test")
    yield options
    server.stop()
