"""The pix2pix networks, augmentation, the training step (also under DDP) and model files."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from raypipe.training.augment import AugmentConfig, augment
from raypipe.model.config import ModelConfig
from raypipe.model.files import save_model
from raypipe.model.inference import load_model
from raypipe.model.networks import count_parameters, define_D, define_G, flops_per_sample
from raypipe.training.pix2pix import Pix2Pix
from raypipe.resources import EXAMPLES

SAMPLE = EXAMPLES / "sim-sample"

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


def test_the_channels_last_stem_computes_what_the_standard_layout_does():
    """The 3D stem runs in channels-last-3d layout (~2x faster on a CPU): outputs and gradients must be
    those of the same weights in the standard layout."""
    torch.manual_seed(0)
    G = define_G(TINY).train()
    assert G.conv3d[2].weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert not G.conv3d[2].weight.is_contiguous()
    plain = define_G(TINY).use_stem_layout(torch.contiguous_format).train()
    plain.load_state_dict(G.state_dict())
    assert plain.conv3d[2].weight.is_contiguous() and torch.equal(plain.conv3d[2].weight, G.conv3d[2].weight)
    x = torch.randn(3, 10, 64, 64)
    outputs = []
    for net in (G, plain):
        torch.manual_seed(1)  # the same dropout masks
        out = net(x)
        out.square().mean().backward()
        outputs.append(out)
    assert torch.allclose(outputs[0], outputs[1], atol=1e-5)
    for (name, p), q in zip(G.named_parameters(), plain.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-5, rtol=1e-4), name


def test_predict_in_micro_batches_gives_the_whole_batch_result(monkeypatch, tmp_path):
    """On a CPU, predict runs the network a few stacks at a time (cache, memory): same depictions and
    margins as one pass over the whole batch, odd sizes and an empty batch included."""
    import raypipe.model.inference as inference

    torch.manual_seed(0)
    model = load_model(save_model(define_G(TINY).eval(), TINY, tmp_path / "m.safetensors", name="tiny", half=False),
                       device="cpu")
    x = np.random.default_rng(0).normal(size=(5, 10, 64, 64)).astype(np.float32)
    results = {}
    for step in (0, 2, 3):
        monkeypatch.setattr(inference, "CPU_MICRO_BATCH", step)
        out = model.infer(x)
        results[step] = (out.depictions, out.margins)
        empty = model.infer(x[:0])
        assert empty.depictions.shape == (0, 64, 64, 3) and empty.margins.shape == (0, 64, 64)
    for step in (2, 3):
        assert np.array_equal(results[step][0], results[0][0])
        assert np.allclose(results[step][1], results[0][1], atol=1e-5)
    assert results[0][0].shape == (5, 64, 64, 3)


@pytest.mark.parametrize("head", ["palette", "rgb"])
def test_test_time_views_make_the_prediction_follow_a_flipped_scan(tmp_path, head):
    """With the 4 flips of the scan plane combined, a flipped stack gets exactly the flipped depiction (the
    views are a group); one view gives no such guarantee. The views are part of the model file."""
    from raypipe.model.files import rewrite_model

    config = ModelConfig(size=64, ngf=8, ndf=8, conv3d_channels=4, head=head)
    torch.manual_seed(1)
    path = save_model(define_G(config).eval(), config, tmp_path / "m.safetensors", name="tiny", half=False)
    model = load_model(path, device="cpu")
    assert model.views == 1
    x = np.random.default_rng(1).normal(size=(3, 10, 64, 64)).astype(np.float32)
    flipped = x[..., ::-1].copy()
    one, four = model.predict(flipped), model.predict(flipped, views=4)
    assert not np.array_equal(one, model.predict(x)[:, :, ::-1])
    assert (four != model.predict(x, views=4)[:, :, ::-1]).any(axis=-1).mean() < 1e-3  # float ties only
    assert not np.array_equal(four, one)
    out = model.infer(x, views=2)
    depictions, margins = out.depictions, out.margins
    assert depictions.shape == (3, 64, 64, 3) and margins.shape == (3, 64, 64)

    four_views = load_model(rewrite_model(path, tmp_path / "v.safetensors", views=4), device="cpu")
    assert four_views.views == 4 and four_views.tag != model.tag
    assert np.array_equal(four_views.predict(x), model.predict(x, views=4))
    with pytest.raises(ValueError, match="views must be 1 to 4"):
        model.predict(x, views=5)

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


def test_the_symmetries_of_the_square_are_exact_drawn_alike_and_all_eight_appear():
    """With ``symmetries`` each sample gets one of the 8 symmetries of the square, the same on stack and
    target, as an exact permutation of pixels; over 64 samples every one of the 8 is drawn."""
    from dataclasses import replace

    from raypipe.training.augment import finish

    torch.manual_seed(0)
    stack, target = torch.randn(64, 10, 16, 16), torch.randn(64, 3, 16, 16).sign()
    cfg = replace(AugmentConfig.off(), symmetries=True)
    s, t = augment(stack, target, cfg, torch.Generator().manual_seed(1))
    plain = finish(stack)  # the model's preprocessing alone commutes with every symmetry of the square
    ops = [lambda x, k=k, m=m: (torch.rot90(x, k, dims=(-2, -1)).transpose(-2, -1) if m
                                else torch.rot90(x, k, dims=(-2, -1))) for k in range(4) for m in (False, True)]
    drawn = []
    for b in range(64):
        found = [n for n, op in enumerate(ops) if torch.allclose(s[b], op(plain[b]), atol=1e-5)
                 and torch.equal(t[b], op(target[b]))]
        assert len(found) == 1, b  # exactly one symmetry, the same for stack and target
        drawn.append(found[0])
    assert sorted(set(drawn)) == list(range(8))
    assert AugmentConfig.from_dict({"preset": "experimental", "symmetries": True}).symmetries


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



def test_the_labelling_driver_reads_model_files_without_torch(tmp_path):
    """The driver plans a labelling run from the model file's header (grid, calibration, tag); only the
    inference actors import torch (~320 MiB a process)."""
    import subprocess
    import sys

    path = save_model(define_G(TINY), TINY, tmp_path / "m.safetensors", name="tiny")
    code = ("import sys; import raypipe.pipelines.predict, raypipe.labels.job, raypipe.cli; "
            "from raypipe.model.files import model_config, model_tag, read_header, local_model_file; "
            f"c = model_config({str(path)!r}); t = model_tag({str(path)!r}); model_config(None); "
            f"read_header(local_model_file({str(path)!r})); "
            "print(c.size, t, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    size, tag, torch_loaded = done.stdout.split()
    assert (int(size), tag.split("@")[0], torch_loaded) == (64, "tiny", "False")
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


# --- the palette head, config fields, augmentation for experiments, the plain loop -----------------------
PALETTE_TINY = ModelConfig(size=64, ngf=8, ndf=8, conv3d_channels=4, lr=2e-3, head="palette", input_dropout=0.0)


def _sample_depictions(n: int = 4) -> torch.Tensor:
    """(n, 3, 64, 64) real depictions in [-1, 1] (the bundled sample's targets, cropped to 64 px)."""
    from raypipe.training.data import decode_targets, list_shards, read_shard
    from raypipe.storage import filesystem

    fs, _ = filesystem(str(SAMPLE))
    rows = read_shard(fs, list_shards(str(SAMPLE))[0], None, ["target_png"])
    return torch.as_tensor(decode_targets(rows["target_png"][:n]))[:, :, 32:96, 32:96]


def test_palette_head_is_crisp_and_decodes_depictions_exactly():
    from raypipe.chem.elements import palette
    from raypipe.model.heads import classes_of

    target = _sample_depictions()
    classes = classes_of(target)
    assert set(classes.unique().tolist()) >= {0, 1, 2}  # background, H and C present
    rebuilt = palette()[classes.numpy()].astype(np.uint8)
    original = ((target + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(rebuilt, original)

    G = define_G(PALETTE_TINY).eval()
    with torch.no_grad():
        out = G(torch.randn(2, 10, 64, 64))
    assert out.shape == (2, 11, 64, 64)
    picture = G.head.depiction(out)
    colours = {tuple(c) for c in picture.reshape(-1, 3)}
    assert colours <= {tuple(int(v) for v in c) for c in palette()}  # only palette colours: always crisp
    margin = G.head.margin(out)
    assert margin.shape == (2, 64, 64) and float(margin.min()) >= 0 and float(margin.max()) <= 1


def test_palette_training_step_learns_a_fixed_batch():
    from dataclasses import replace

    torch.manual_seed(0)
    target = _sample_depictions()
    stack = torch.randn(4, 10, 64, 64)
    for config in (PALETTE_TINY, replace(PALETTE_TINY, lambda_adv=0.0, lambda_dice=1.0, focal_gamma=2.0)):
        model = Pix2Pix(config)
        first = model.train_step(stack, target)
        assert ("loss_D" in first) == (config.lambda_adv > 0) and ("loss_G_dice" in first) == bool(config.lambda_dice)
        for _ in range(40):
            last = model.train_step(stack, target)
        assert last["loss_G_CE"] < 0.5 * first["loss_G_CE"]


def test_both_heads_save_load_and_predict(tmp_path):
    for config in (TINY, PALETTE_TINY):
        G = define_G(config).eval()
        model = load_model(save_model(G, config, tmp_path / f"{config.head}.safetensors", name=config.head),
                           device="cpu")
        assert model.config.head == config.head and model.input_shape == (10, 64, 64)
        out = model.infer(np.zeros((1, 10, 64, 64), np.float32))
        depictions, margin = out.depictions, out.margins
        assert depictions.shape == (1, 64, 64, 3) and depictions.dtype == np.uint8 and margin.shape == (1, 64, 64)


def test_model_files_that_do_not_fit_are_refused_clearly(tmp_path):
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = save_model(define_G(TINY), TINY, tmp_path / "m.safetensors", name="m")
    state = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        header = dict(f.metadata())
    wrong = dict(header, config=json.dumps({**json.loads(header["config"]), "ngf": 16}))
    save_file(state, str(tmp_path / "edited.safetensors"), metadata=wrong)
    with pytest.raises(ValueError, match="do not match the model's own config"):
        load_model(tmp_path / "edited.safetensors")
    save_file(state, str(tmp_path / "future.safetensors"), metadata=dict(header, format_version="99"))
    with pytest.raises(ValueError, match="newer than this raypipe reads"):
        load_model(tmp_path / "future.safetensors")
    # a file of the first format (no version, no head in its config) is read as the RGB head
    old = {k: v for k, v in header.items() if k != "format_version"}
    old["config"] = json.dumps({k: v for k, v in json.loads(header["config"]).items()
                                if k not in ("head", "fov", "lambda_adv", "lambda_ce")})
    save_file(state, str(tmp_path / "v1.safetensors"), metadata=old)
    assert load_model(tmp_path / "v1.safetensors").config.head == "rgb"


def test_config_fields_schedule_and_checks():
    from dataclasses import replace

    cosine = replace(TINY, lr=1e-3, lr_schedule="cosine", lr_warmup=10, lr_min_ratio=0.1)
    assert cosine.learning_rate(0, 110) == pytest.approx(1e-4)  # warm-up from lr / 10
    assert cosine.learning_rate(10, 110) == pytest.approx(1e-3)
    assert cosine.learning_rate(110, 110) == pytest.approx(1e-4)
    linear = replace(TINY, lr=1e-3, lr_schedule="linear", lr_min_ratio=0.0)
    assert linear.learning_rate(40, 100) == pytest.approx(1e-3) and linear.learning_rate(75, 100) == pytest.approx(5e-4)
    assert TINY.learning_rate(99, 100) == TINY.lr
    with pytest.raises(ValueError, match="unknown head"):
        replace(TINY, head="mask")
    with pytest.raises(ValueError, match="unknown lr_schedule"):
        replace(TINY, lr_schedule="step")
    assert ModelConfig.preset("small-palette").head == "palette" and TINY.window.pixel == pytest.approx(18 / 64)


def test_median_filter_matches_preprocessing():
    from scipy import ndimage

    from raypipe.training.augment import finish, median_filter
    from raypipe.scans.preprocess import normalise

    x = torch.randn(2, 10, 32, 32)
    assert torch.equal(median_filter(x), torch.as_tensor(ndimage.median_filter(x.numpy(), size=(1, 1, 3, 3))))
    assert np.allclose(finish(x)[0].numpy(), normalise(x[0].numpy()), atol=1e-5)  # training == inference


def test_experimental_augmentation_keeps_alignment_and_colours():
    from raypipe.training.augment import few_slices
    from raypipe.model.heads import classes_of

    # fewer images: both ends kept, the rest linear in between
    ramp = torch.arange(10, dtype=torch.float32).view(1, 10, 1, 1).expand(1, 10, 4, 4)
    rebuilt = few_slices(ramp, torch.tensor([4]))
    assert torch.allclose(rebuilt[0, :, 0, 0], torch.linspace(0, 9, 10), atol=1e-5)
    steps = few_slices(torch.arange(10.0).pow(2).view(1, 10, 1, 1), torch.tensor([3]))[0, :, 0, 0]
    assert steps[0] == 0 and steps[-1] == 81 and not torch.allclose(steps, torch.arange(10.0).pow(2))

    target = _sample_depictions()
    stack = (target[:, 1:2] > 0).float().repeat(1, 10, 1, 1)  # the molecule's white H balls as a stack
    cfg = AugmentConfig.experimental()
    s, t = augment(stack, target, cfg, torch.Generator().manual_seed(0))
    assert set(classes_of(t).unique().tolist()) <= set(range(11))
    assert torch.allclose(t, torch.as_tensor(np.round((t.numpy() + 1) * 127.5) / 127.5 - 1), atol=1e-5)
    assert s.shape == stack.shape and abs(float(s.mean())) < 1e-4  # finished: z-scored per stack
    with pytest.raises(ValueError, match="unknown augment keys"):
        AugmentConfig.from_dict({"noice": 0.1})
    assert AugmentConfig.from_dict({"preset": "experimental", "noise": 0.0}).few_slices_p == cfg.few_slices_p


def test_plain_loop_checkpoints_resumes_and_inits_from(tmp_path):
    import json

    from raypipe.training.loop import train_local
    from raypipe.training.run import TrainConfig

    cfg = TrainConfig(data_uri=str(SAMPLE), storage_path=str(tmp_path), run_name="loop", model="small-palette",
                      augment={"preset": "experimental"}, batch_size=2, steps=4, checkpoint_every=2, val_every=2,
                      val_samples=3, log_every=1)
    result = train_local(cfg, progress=lambda *_: None)
    run = tmp_path / "loop"
    assert result["step"] == 4 and (run / "checkpoints" / "LATEST").read_text() == "step-0000004"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["LATEST", "step-0000004"]  # older removed
    model = load_model(run / "model.safetensors", device="cpu")
    assert model.config.head == "palette" and model.notes["step"] in (2, 4)
    cfg.steps = 6
    train_local(cfg, progress=lambda *_: None)
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"step": 4, "event": "resumed from checkpoint at step 4"} in log and log[-1]["step"] == 6

    fresh = TrainConfig(**{**cfg.__dict__, "run_name": "continued", "init_from": str(run / "model.safetensors"),
                           "steps": 1, "val_every": 1, "checkpoint_every": 1})
    train_local(fresh, progress=lambda *_: None)
    first = json.loads((tmp_path / "continued" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["event"].startswith("initialised from")
    with pytest.raises(ValueError, match="differs from this run's"):
        TrainConfig(**{**fresh.__dict__, "model": "small"}).check()
    other_grid = TrainConfig(**{**cfg.__dict__, "run_name": "grid", "model_overrides": {"size": 64}})
    with pytest.raises(ValueError, match=r"shards hold stacks of \(10, 128, 128\).*the model's grid is \(10, 64, 64\)"):
        train_local(other_grid, progress=lambda *_: None)


def test_calibration_says_how_often_it_is_right(tmp_path):
    from raypipe.model.calibration import Calibration, fit, reliability

    rng = np.random.default_rng(0)
    quality = rng.uniform(0, 1, 4000)
    right = rng.uniform(0, 1, 4000) < quality**2  # right more often when drawn cleanly, but not always
    rows = [{"quality": q, "margin": 0.5, "uncertain": 0.5, "valid": 1.0, "log_atoms": 3.0} for q in quality]
    calibration = fit(rows, right.tolist())
    confidence = [calibration.predict(r) for r in rows]
    ece, bins = reliability(confidence, right.tolist())
    assert ece < 0.05 and abs(np.mean(confidence) - right.mean()) < 0.02
    raw_ece, _ = reliability(quality.tolist(), right.tolist())  # the drawing score is no probability
    assert raw_ece > 0.1
    assert Calibration.from_json(calibration.to_json()) == calibration
    never = fit(rows[:50], [False] * 50)  # a model that is never right: an honest confidence near 0
    assert never.predict(rows[0]) < 0.02

    G = define_G(PALETTE_TINY)
    path = save_model(G, PALETTE_TINY, tmp_path / "m.safetensors", name="m")
    from raypipe.model.files import rewrite_model

    calibrated = load_model(rewrite_model(path, tmp_path / "c.safetensors", calibration=calibration), device="cpu")
    assert load_model(path).calibration is None and calibrated.calibration == calibration
    assert calibrated.notes == {"calibration": ""}


def _one_branch_to_train(plain, config, branch: str, tmp_path):
    """A model file of ``plain`` (the base), a Pix2Pix of ``config`` training ``branch`` alone from it, and a
    copy of every other weight and statistic (to check they stay as they were)."""
    from raypipe.training.run import init_generator

    torch.manual_seed(0)
    base = save_model(define_G(plain).eval(), plain, tmp_path / "base.safetensors", name="base", half=False)
    model = Pix2Pix(config, trainable=branch)
    init_generator(model.G, base)
    return base, model, {k: v.clone() for k, v in model.G.state_dict().items() if not k.startswith(f"{branch}.")}


def _losses(model, stack, target, branch: str, steps: int) -> tuple[float, float]:
    """The branch's loss at the first and the last of ``steps`` + 1 training steps on one batch."""
    first = last = model.train_step(stack, target)[f"loss_G_{branch}"]
    for _ in range(steps):
        last = model.train_step(stack, target)[f"loss_G_{branch}"]
    return first, last


def _trained_branch_saved(model, config, branch: str, before: dict, base, tmp_path):
    """Checks that training ``branch`` left every other weight and statistic as it was (so the depictions
    do not change), saves the model (its file of the current format, the branch in its config) and returns
    it loaded, the base loaded, and the file."""
    import json

    from safetensors import safe_open

    from raypipe.model.files import FORMAT_VERSION

    after = model.G.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    path = save_model(model.G.eval(), config, tmp_path / f"{branch}.safetensors", name=branch, half=False)
    with safe_open(str(path), framework="numpy") as f:
        header = f.metadata()
    assert header["format_version"] == str(FORMAT_VERSION) == "4" and json.loads(header["config"])[branch]
    return load_model(path, device="cpu"), load_model(base, device="cpu"), path


def test_the_centre_output_trains_alone_and_travels_in_the_model_file(tmp_path):
    """``centres``: one more output channel. Trained alone (``trainable="centres"``) it learns while every
    other weight and batch-norm statistic stays as it was, so the depictions do not change; the model file
    (format 3 on) carries it, ``infer`` returns the map, the 4 views keep it following a flipped scan, and a
    model without it can start a run with it (not the other way round)."""
    from dataclasses import replace

    from raypipe.training.run import TrainConfig

    plain = replace(TINY, head="palette")
    config = replace(plain, centres=True)
    base, model, before = _one_branch_to_train(plain, config, "centres", tmp_path)
    stack = 0.1 * torch.randn(4, 10, 64, 64)
    target = -torch.ones(4, 4, 64, 64)
    spots = torch.zeros(4, 64, 64, dtype=torch.bool)
    for b, (r, c) in enumerate([(10, 12), (30, 40), (50, 20), (20, 50)]):  # a bright square marks an atom
        stack[b, :, r:r + 4, c:c + 4] = 3.0
        spots[b, r:r + 4, c:c + 4] = True
    target[:, 3][spots] = 1.0
    first, last = _losses(model, stack, target, "centres", 40)
    assert last < 0.2 * first
    loaded, old, path = _trained_branch_saved(model, config, "centres", before, base, tmp_path)
    x = stack.numpy()
    out = loaded.infer(x)
    assert loaded.has_centres and not old.has_centres and old.infer(x).centres is None
    assert out.centres.shape == (4, 64, 64) and 0 <= out.centres.min() and out.centres.max() <= 1
    assert out.centres[spots.numpy()].mean() > 0.5 > 0.1 > out.centres[~spots.numpy()].mean()  # learnt
    assert np.array_equal(out.depictions, old.predict(x))  # the depictions are the base model's
    flipped = loaded.infer(x[..., ::-1].copy(), views=4).centres
    assert np.allclose(flipped, loaded.infer(x, views=4).centres[..., ::-1], atol=1e-5)

    cfg = dict(data_uri=str(SAMPLE), storage_path=str(tmp_path), run_name="c", model="small-palette")
    with pytest.raises(ValueError, match="trainable .centres. needs that output"):
        TrainConfig(**cfg, trainable="centres").check()
    with pytest.raises(ValueError, match="trainable must be one of"):
        TrainConfig(**cfg, trainable="head").check()
    with pytest.raises(ValueError, match="differs from this run's"):  # a centre model cannot start a plain run
        TrainConfig(**cfg, model_overrides={"size": 64, "ngf": 8, "conv3d_channels": 4},
                    init_from=str(path)).check()


def test_centre_targets_mark_the_atoms_the_depiction_shows_and_move_with_it():
    """The centre target (a fourth target channel): one spot per atom the true depiction shows, and
    augmentation keeps it on the depiction's atoms."""
    import pyarrow.parquet as pq

    from raypipe.chem.depiction import decode_png
    from raypipe.chem.graph import classify_pixels
    from raypipe.chem.pixels import find_atoms
    from raypipe.training.data import decode_targets
    from raypipe.window import DEFAULT_WINDOW

    pngs = pq.read_table(SAMPLE / "shards" / "shard-00000.parquet", columns=["target_png"])["target_png"].to_pylist()
    targets = decode_targets(pngs, DEFAULT_WINDOW)
    assert targets.shape == (len(pngs), 4, 128, 128)
    assert np.array_equal(targets[:, :3], decode_targets(pngs))
    from scipy import ndimage

    for png, spots in zip(pngs, targets[:, 3]):
        peaks = (spots == ndimage.maximum_filter(spots, size=3)) & (spots > 0.5)
        assert ndimage.label(peaks)[1] == len(find_atoms(classify_pixels(decode_png(png)), DEFAULT_WINDOW))
    stack = torch.as_tensor(targets[:, :1]).repeat(1, 10, 1, 1)
    _, moved = augment(stack, torch.as_tensor(targets), AugmentConfig.experimental(), torch.Generator().manual_seed(0))
    on_spots = moved[:, 3] > 0.5
    assert on_spots.any() and (moved[:, :3].amax(dim=1)[on_spots] > -1).all()  # every spot still on a drawn atom


def test_the_count_output_learns_a_formula_alone_and_travels_in_the_model_file(tmp_path):
    """``counts``: one more output channel per element, whose density sums to the molecule's count of it.
    Trained alone (``trainable="counts"``) it learns to count while every other weight stays as it was; the
    model file (format 4) carries it, ``infer`` returns the counts, the same whichever way the scan is
    flipped, and the training config refuses a count run on a model without the output."""
    from dataclasses import replace

    from raypipe.chem.elements import ELEMENTS
    from raypipe.training.run import TrainConfig

    plain = replace(TINY, head="palette", centres=True)
    config = replace(plain, counts=True, lr=2e-3)
    base, model, before = _one_branch_to_train(plain, config, "counts", tmp_path)
    stack = 0.1 * torch.randn(8, 10, 64, 64)
    carbons = [1, 2, 3, 4, 1, 2, 3, 4]
    spots = [(10, 12), (40, 44), (48, 16), (16, 48)]
    for b, n in enumerate(carbons):  # a bright square marks each carbon atom
        for r, c in spots[:n] if b < 4 else spots[::-1][:n]:
            stack[b, :, r:r + 5, c:c + 5] = 3.0
    target = -torch.ones(8, 4 + len(ELEMENTS), 64, 64)
    target[:, 4 + ELEMENTS.index("C")] = torch.tensor(carbons, dtype=torch.float32)[:, None, None]
    target[:, 4 + ELEMENTS.index("H")] = 2.0
    target[:, 4:, :3, :] = -1  # the padding augmentation leaves at an edge: the planes' maximum is read
    first, last = _losses(model, stack, target, "counts", 300)
    assert last < 0.1 * first
    loaded, old, _ = _trained_branch_saved(model, config, "counts", before, base, tmp_path)
    x = stack.numpy()
    counts = loaded.infer(x).counts
    assert loaded.has_counts and not old.has_counts and old.infer(x).counts is None
    assert counts.shape == (8, len(ELEMENTS))
    read = counts[:, ELEMENTS.index("C")]  # learnt: more squares, more carbons (on random features)
    assert np.all(np.diff(read[:4]) > 0.4) and np.all(np.diff(read[4:]) > 0.4)
    assert read[3] - read[0] > 1.2 and read[7] - read[4] > 1.2  # at the start: 1 of each, whatever it sees
    assert np.abs(counts[:, ELEMENTS.index("H")] - 2).max() < 0.5
    assert counts[:, [ELEMENTS.index(e) for e in ("N", "O", "Br", "I")]].max() < 0.3
    assert np.array_equal(loaded.infer(x).depictions, old.infer(x).depictions)
    four = loaded.infer(x, views=4).counts
    assert np.allclose(loaded.infer(x[..., ::-1].copy(), views=4).counts, four, rtol=1e-4, atol=1e-4)
    assert np.all(np.diff(four[:4, ELEMENTS.index("C")]) > 0.3)

    cfg = dict(data_uri=str(SAMPLE), storage_path=str(tmp_path), run_name="c", model="small-palette")
    with pytest.raises(ValueError, match="trainable 'counts' needs that output"):
        TrainConfig(**cfg, trainable="counts", model_overrides={"centres": True}).check()


def test_count_targets_are_the_formula_and_survive_augmentation():
    """The count target: one constant plane per element after the depiction and the centre target, the
    formula's count of it; augmentation (flips, rotation, shift, drift) keeps every plane's maximum."""
    import pyarrow.parquet as pq

    from raypipe.chem.elements import ELEMENTS
    from raypipe.chem.elements import formula_counts
    from raypipe.training.data import decode_targets
    from raypipe.window import DEFAULT_WINDOW

    table = pq.read_table(SAMPLE / "shards" / "shard-00000.parquet", columns=["target_png", "formula"])
    pngs, formulas = table["target_png"].to_pylist(), table["formula"].to_pylist()
    targets = decode_targets(pngs, DEFAULT_WINDOW, formulas)
    assert targets.shape == (len(pngs), 4 + len(ELEMENTS), 128, 128)
    assert np.array_equal(targets[:, :4], decode_targets(pngs, DEFAULT_WINDOW))
    truth = np.stack([formula_counts(f) for f in formulas])
    assert truth[:, ELEMENTS.index("C")].min() > 0 and truth.sum() > truth[:, :2].sum()  # more than C and H
    stack = torch.as_tensor(targets[:, :1]).repeat(1, 10, 1, 1)
    _, moved = augment(stack, torch.as_tensor(targets), AugmentConfig.experimental(), torch.Generator().manual_seed(0))
    assert np.array_equal(moved[:, 4:].amax(dim=(2, 3)).numpy(), truth)
    with pytest.raises(ValueError, match="Xe is not one of the model's elements"):
        formula_counts("C6H5Xe")
