"""The pix2pix networks, augmentation, the training step (also under DDP) and model files."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from raypipe.model.augment import AugmentConfig, augment
from raypipe.model.config import ModelConfig
from raypipe.model.inference import load_model, save_model
from raypipe.model.networks import count_parameters, define_D, define_G, flops_per_sample
from raypipe.model.pix2pix import Pix2Pix

TINY = ModelConfig(size=64, ngf=8, ndf=8, conv3d_channels=4, lr=2e-3)


def test_networks_have_the_published_shape():
    paper = ModelConfig.preset("paper")
    G, D = define_G(paper), define_D(paper)
    x = torch.randn(1, 10, 128, 128)
    y = G.eval()(x)
    assert y.shape == (1, 3, 128, 128) and y.abs().max() <= 1
    assert D(x, y).shape == (1, 1, 3, 3)
    assert len(G.down) == 6 and G.conv3d[2].stride == (2, 2, 2)  # 3D stride-2 conv + six 2D blocks = 7 downs
    assert max(b[0].out_channels for b in G.down) == 512
    small = ModelConfig.preset("small")
    assert count_parameters(define_G(small)) < count_parameters(G) / 10
    assert flops_per_sample(define_G(small), x) < flops_per_sample(G, x) / 10


def test_config_round_trip(tmp_path):
    TINY.save(tmp_path / "c.json")
    assert ModelConfig.load(tmp_path / "c.json") == TINY
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({"ngf": 8, "colour": 1})


def test_augmentation_moves_stack_and_target_together():
    target = -torch.ones(2, 3, 64, 64)
    target[:, 0, 8:14, 10:20] = 1.0  # a red bar off centre
    stack = target[:, :1].repeat(1, 10, 1, 1).clone()
    cfg = AugmentConfig(shear=0.0, shake=0.0)
    gen = torch.Generator().manual_seed(3)
    s, t = augment(stack, target, cfg, gen)
    assert not torch.equal(t, target)
    agree = ((s[:, 0] > 0) == (t[:, 0] > 0)).float().mean()
    assert agree > 0.97
    assert set(torch.unique(t).tolist()) <= {-1.0, 1.0}  # nearest sampling keeps the depiction's colours
    sheared, _ = augment(stack, target, AugmentConfig(shear=0.3, shake=0.0), torch.Generator().manual_seed(3))
    assert (sheared != s).any()  # shear acts on the stack only


def test_train_step_learns_a_fixed_batch():
    torch.manual_seed(0)
    model = Pix2Pix(TINY)
    stack = torch.randn(4, 10, 64, 64)
    target = -torch.ones(4, 3, 64, 64)
    target[:, :, 20:40, 16:48] = 0.5  # one depiction for every stack: learnable in a few steps
    first = model.train_step(stack, target)["loss_G_L1"]
    for _ in range(30):
        last = model.train_step(stack, target)["loss_G_L1"]
    assert last < 0.5 * first


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)  # same initial weights on both ranks (DDP also broadcasts them)
    wrap = lambda net: torch.nn.parallel.DistributedDataParallel(net, broadcast_buffers=False)  # noqa: E731
    model = Pix2Pix(TINY, wrap=wrap)
    torch.manual_seed(100 + rank)  # each rank its own data
    for _ in range(3):
        stack = torch.randn(2, 10, 64, 64)
        model.train_step(stack, torch.tanh(stack[:, :3]))
    params = torch.cat([p.detach().flatten() for p in model.G.parameters()] +
                       [p.detach().flatten() for p in model.D.parameters()])
    torch.save(params, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_train_step_under_ddp(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    p0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    p1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert torch.equal(p0, p1)  # gradients of G and D were all-reduced: replicas stay identical


def test_model_file_round_trip(tmp_path):
    torch.manual_seed(0)
    G = define_G(TINY).eval()
    x = torch.randn(2, 10, 64, 64)
    path = save_model(G, TINY, tmp_path / "m.safetensors", name="tiny", notes={"steps": 3}, half=False)
    model = load_model(path, device="cpu")
    assert model.config == TINY and model.notes == {"steps": 3} and model.tag.startswith("tiny@")
    expected = ((G(x).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(model.predict(x.numpy()), expected)
    half = load_model(save_model(G, TINY, tmp_path / "h.safetensors", name="tiny"), device="cpu")
    assert np.abs(half.predict(x.numpy()).astype(int) - expected).max() <= 3
    with pytest.raises(ValueError, match="expected stacks of shape"):
        model.predict(np.zeros((1, 10, 16, 16), np.float32))
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a raypipe model"):
        load_model(tmp_path / "other.safetensors")


def test_foreground_weighted_l1_counts_molecule_pixels_more():
    from dataclasses import replace

    target = -torch.ones(1, 3, 16, 16)
    target[..., :4, :4] = 1.0  # 1/16 of the picture is molecule
    black = -torch.ones_like(target)
    plain = Pix2Pix(TINY).l1(black, target)
    weighted = Pix2Pix(replace(TINY, l1_foreground_weight=10.0)).l1(black, target)
    assert torch.isclose(plain, torch.tensor(2.0 / 16 * 3 / 3))
    assert weighted > 4 * plain
    assert torch.isclose(Pix2Pix(replace(TINY, l1_foreground_weight=10.0)).l1(target, target), torch.tensor(0.0))
