"""Gradient clipping by global norm (Pascanu et al. 2013):

    ||g|| = sqrt(sum over all parameters of sum g_i^2)
    g <- g * min(1, max_norm / (||g|| + 1e-6))

the same as torch.nn.utils.clip_grad_norm_.
"""

import torch


@torch.no_grad()
def clip_grad_norm(parameters, max_norm: float) -> float:
    """Clip in place; returns ||g|| before clipping (inf or nan when a gradient is not finite)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
    if max_norm > 0:
        scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(scale.to(g.dtype))
    return float(total)
