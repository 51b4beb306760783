"""Learning-rate schedules (a multiplier of the peak lr at each step) and gradient clipping."""

import math

import torch


def warmup_cosine(step: int, warmup: int, total: int, floor: float = 0.1) -> float:
    """Linear warmup from 0 to 1 over `warmup` steps, then cosine decay to `floor` at `total`:

        f(s) = s / warmup                                           for s < warmup
        f(s) = floor + (1 - floor) * (1 + cos(pi * p)) / 2,  p = (s - warmup) / (total - warmup)
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


@torch.no_grad()
def clip_grad_norm(parameters, max_norm: float) -> float:
    """Scale all gradients by min(1, max_norm / ||g||) where ||g|| is the norm of all of them
    together (Pascanu et al. 2013). Returns ||g|| before clipping."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
    if max_norm > 0:
        scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(scale.to(g.dtype))
    return float(total)
