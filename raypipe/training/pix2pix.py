"""``Pix2Pix``: generator, discriminator and both optimisers in one object, with the training step.

The step is built so that it runs under DistributedDataParallel with batch norm in both networks:
- the discriminator runs once per backward pass: its loss uses one forward pass over real and fake
  pairs concatenated in the batch, and the generator's adversarial loss a second forward pass only
  after the first backward is done (a discriminator called twice before one backward makes DDP's
  buffer broadcast modify batch-norm buffers that autograd still needs: the known in-place error);
- the generator's backward pass through D runs under D's ``no_sync`` (those gradients of D are
  thrown away, so there is nothing to all-reduce);
- wrapped networks are built with ``broadcast_buffers=False`` (each replica keeps its own batch-norm
  running statistics; rank 0's are the ones saved).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from raypipe.model.config import TRAINABLE, ModelConfig
from raypipe.model.heads import log_counts
from raypipe.model.networks import define_D, define_G


class Pix2Pix:
    def __init__(self, config: ModelConfig, device: torch.device | str = "cpu",
                 wrap: Callable[[nn.Module], nn.Module] | None = None, trainable: str = "all") -> None:
        """``wrap``: applied to each network after it moves to ``device`` (e.g. Ray Train's prepare_model).
        ``trainable``: "all", or "centres" / "counts": only the atom-centre (count) branch learns, on the
        features of the rest of the generator kept as it is (eval mode, no gradients: a fast way to add that
        output to a trained model; the depictions and other outputs stay exactly the same)."""
        if trainable not in TRAINABLE:
            raise ValueError(f"trainable must be one of {TRAINABLE}, got {trainable!r}")
        if trainable in ("centres", "counts") and not getattr(config, trainable):
            raise ValueError(f"trainable {trainable!r} needs a model with that output ({trainable}: true)")
        self.config = config
        self.trainable = trainable
        self.device = torch.device(device)
        wrap = wrap or (lambda net: net)
        self.G = wrap(define_G(config).to(self.device))
        self.D = wrap(define_D(config).to(self.device))
        params = getattr(self.generator, trainable).parameters() if trainable != "all" else self.G.parameters()
        self.opt_G = torch.optim.Adam(params, lr=config.lr, betas=(config.beta1, 0.999))
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=config.lr, betas=(config.beta1, 0.999))

    @property
    def generator(self) -> nn.Module:
        """The bare generator (unwrapped from DDP)."""
        return getattr(self.G, "module", self.G)

    @property
    def head(self):
        return self.generator.head

    def set_learning_rate(self, step: int, total: int) -> float:
        """Apply the config's schedule (``lr_schedule``, ``lr_warmup``) for ``step`` of ``total``."""
        lr = self.config.learning_rate(step, total)
        for opt in (self.opt_G, self.opt_D):
            for group in opt.param_groups:
                group["lr"] = lr
        return lr

    def train_step(self, stack: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        """One optimisation step of D then G on a batch ((B, n_slices, S, S) stacks, (B, 3, S, S) target
        depictions in [-1, 1], with a fourth channel, the centre target, for a model with centres); returns
        the losses. With ``lambda_adv`` 0 the discriminator is skipped."""
        if self.trainable != "all":
            return self._branch_step(stack, target)
        self.G.train(), self.D.train()
        output = self.G(stack)
        fake = self.head.image(output)
        depiction = target[:, :3]
        losses: dict[str, float] = {}
        adversarial = self.config.lambda_adv > 0

        if adversarial:
            self.opt_D.zero_grad(set_to_none=True)
            logits = self.D(torch.cat([stack, stack]), torch.cat([depiction, fake.detach()]))
            real_logits, fake_logits = logits.chunk(2)
            loss_D = 0.5 * (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
            loss_D.backward()
            self.opt_D.step()
            losses["loss_D"] = loss_D.item()

        self.opt_G.zero_grad(set_to_none=True)
        # D's parameter gradients from this pass are discarded (zeroed before D's next step): skip their
        # all-reduce, so DDP does not wait for them
        with getattr(self.D, "no_sync", contextlib.nullcontext)():
            loss_G, parts = self.head.loss(output, target)
            if adversarial:
                fooled = self.D(stack, fake)
                loss_adv = F.binary_cross_entropy_with_logits(fooled, torch.ones_like(fooled))
                loss_G = loss_G + self.config.lambda_adv * loss_adv
                losses["loss_G_adv"] = loss_adv.item()
            loss_G.backward()
        self.opt_G.step()
        return {**losses, **parts}

    def _branch_step(self, stack: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        """``trainable`` "centres" or "counts": that branch learns; the rest of the generator in eval mode
        without gradients."""
        bare = self.generator
        bare.eval()
        branch = getattr(bare, self.trainable)
        branch.train()
        with torch.no_grad():
            features = bare.features(stack)
        if self.trainable == "centres":
            loss = self.head.centre_loss(branch(features)[:, 0], target)
        else:
            loss = self.head.count_loss(log_counts(branch(features)), target)
        self.opt_G.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_G.step()
        return {f"loss_G_{self.trainable}": loss.item()}

    def l1(self, fake: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The RGB head's L1 term (without ``lambda_l1``); see :class:`raypipe.model.heads.RGBHead`."""
        from raypipe.model.heads import RGBHead

        return RGBHead(self.config)._loss(fake, target[:, :3])[0] / self.config.lambda_l1

    def state_dict(self) -> dict:
        """Both networks, both optimisers (plain tensors and numbers: loadable with weights_only=True)."""
        bare = lambda net: getattr(net, "module", net)  # noqa: E731
        return {"G": bare(self.G).state_dict(), "D": bare(self.D).state_dict(),
                "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        getattr(self.G, "module", self.G).load_state_dict(state["G"])
        getattr(self.D, "module", self.D).load_state_dict(state["D"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
