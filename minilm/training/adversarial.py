"""Adversarial training on the token embeddings: FGM (Miyato, Dai & Goodfellow 2017, "Adversarial
Training Methods for Semi-Supervised Text Classification").

Text is discrete, so the perturbation goes on the embeddings. For each example, with e (T, C) its
token embeddings and L its loss:

    g     = dL / de                           the gradient at the clean input
    r_adv = epsilon * g / ||g||_2             the norm over the example's whole (T, C) sequence
    loss  = L(e) + L(e + r_adv)               r_adv held constant (no gradient through it)

r_adv is the fast gradient method's worst perturbation of size epsilon to first order; training on
both terms makes the model flat around every training input (a regulariser for small data).

Departures from the paper: the perturbation is added to the output of the token embedding (before
positions and segments are added and before the embedding norm), whose scale the paper fixes by
normalising the embeddings first; minilm does not normalise them, so epsilon is in the units of the
checkpoint's embeddings: it is the length of the whole sequence's perturbation, and a row of
minilm-mini's table has a norm of about 0.86. g comes from its own backward pass (torch.autograd.grad), so a step costs two forward passes
and three backward passes instead of one and one.

Notation: B batch, T time, C channels.
"""

from __future__ import annotations

import torch
from torch import nn


def token_embedding(model) -> nn.Embedding:
    """The token embedding table E_tok of a task model's encoder."""
    backbone = model.transformer if hasattr(model, "transformer") else model.encoder
    return backbone.embed.token


def perturbation(grad: torch.Tensor, epsilon: float) -> torch.Tensor:
    """(B, T, C) gradient -> epsilon * g / ||g||_2, the norm per example over its (T, C)."""
    g = grad.detach().float()
    norm = g.flatten(1).norm(dim=1).clamp_min(1e-12)  # (B,)
    return (epsilon * g / norm[:, None, None]).to(grad.dtype)


def fgm_loss(loss_fn, epsilon: float):
    """Wrap a trainer loss_fn: {part: (sum, count)} of the clean batch plus {"adv_" + part: ...}
    of the same batch with its token embeddings moved by r_adv. A bi-encoder embeds two texts per
    example: each lookup gets its own r_adv, in call order."""
    if not epsilon > 0:
        raise ValueError(f"--epsilon must be > 0, got {epsilon}")

    def wrapped(model, batch):
        table = token_embedding(model)
        seen = []  # (B, T, C) outputs of each lookup of the clean pass

        def keep(module, inputs, output):
            if not output.requires_grad:  # a frozen table (--freeze-embeddings, --peft): g is still defined
                output = output.detach().requires_grad_()
            seen.append(output)
            return output

        hook = table.register_forward_hook(keep)
        try:
            clean = loss_fn(model, batch)
        finally:
            hook.remove()
        total = sum(s / max(int(n), 1) for s, n in clean.values())
        grads = torch.autograd.grad(total, seen, retain_graph=True, allow_unused=True)
        shifts = [perturbation(g, epsilon) if g is not None else None for g in grads]
        calls = iter(shifts)

        def shift(module, inputs, output):
            r = next(calls, None)
            return output if r is None else output + r

        hook = table.register_forward_hook(shift)
        try:
            adversarial = loss_fn(model, batch)
        finally:
            hook.remove()
        return {**clean, **{f"adv_{part}": v for part, v in adversarial.items()}}

    return wrapped


def fgm_targets(targets_fn):
    """The trainer's targets for fgm_loss: each part counted again for its adversarial twin."""

    def targets(batch):
        counts = targets_fn(batch)
        return {**counts, **{f"adv_{part}": n for part, n in counts.items()}}

    return targets
