"""Shared fixtures: one real local Ray and one S3 server per session, a tiny model, the optional real stacks in
../shared/.

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
    from helpers import moto_server

    server, options = moto_server(bucket="raypipe-test")
    yield options
    server.stop()


@pytest.fixture(scope="session")
def model_file(tmp_path_factory) -> str:
    """A tiny model on the shipped grid (10 slices, 128 px, 18 Å) whose every depiction is the empty
    background, deterministically: the pipeline tests check the pipeline, so extraction costs nothing (an
    untrained network paints noise, the worst case of extraction, for every stack)."""
    import torch

    from raypipe.model.config import ModelConfig
    from raypipe.model.files import save_model
    from raypipe.model.networks import define_G

    config = ModelConfig(ngf=4, ndf=4, conv3d_channels=2, head="palette")
    torch.manual_seed(0)
    generator = define_G(config)
    last = generator.out[0]  # the transposed convolution into the palette logits
    torch.nn.init.zeros_(last.weight)
    with torch.no_grad():
        last.bias.copy_(torch.tensor([10.0] + [0.0] * (last.out_channels - 1)))  # background wins everywhere
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    return str(save_model(generator, config, path, name="tiny"))
