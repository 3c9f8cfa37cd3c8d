"""Shared fixtures: one real local Ray and one S3 server per session, the optional real stacks in ../shared/.

Helpers that build test inputs live in ``tests/helpers.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

EXPERIMENTAL = Path(__file__).resolve().parents[1].parent / "shared" / "experimental"


@pytest.fixture(scope="session")
def experimental() -> Path:
    if not EXPERIMENTAL.is_dir():
        pytest.skip(f"real stacks not available ({EXPERIMENTAL} is absent outside the developers' checkout)")
    return EXPERIMENTAL


@pytest.fixture(scope="session")
def ray_cluster():
    """One real local Ray per test session; 4 logical CPUs so actor pools leave room for reads/writes."""
    import os

    import ray

    from raypipe.pipelines.cluster import LOCAL_RAY_ENV

    os.environ.update(LOCAL_RAY_ENV)  # the worker pool of the local Ray raypipe starts (ensure_ray)
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
