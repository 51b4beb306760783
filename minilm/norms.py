"""Normalisation layers: LayerNorm and RMSNorm, chosen by `ModelConfig.norm`.

Notation: x is (..., C); statistics are taken over the last dimension C.
"""

import torch
from torch import nn


class LayerNorm(nn.Module):
    """Layer normalisation (Ba et al. 2016):

        y = (x - mean(x)) / sqrt(var(x) + eps) * gamma + beta

    with the biased variance over the channel dimension, as `torch.nn.LayerNorm` computes it.
    """

    def __init__(self, n_embd: int, eps: float = 1e-5, bias: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n_embd))  # gamma
        self.bias = nn.Parameter(torch.zeros(n_embd)) if bias else None  # beta

    def forward(self, x):
        mean = x.mean(dim=-1, keepdim=True)
        var = (x - mean).pow(2).mean(dim=-1, keepdim=True)
        y = (x - mean) * torch.rsqrt(var + self.eps) * self.weight
        return y + self.bias if self.bias is not None else y


class RMSNorm(nn.Module):
    """Root-mean-square normalisation (Zhang & Sennrich 2019), no mean subtraction and no bias:

        y = x / sqrt(mean(x^2) + eps) * gamma
    """

    def __init__(self, n_embd: int, eps: float = 1e-5, bias: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n_embd))  # gamma

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps) * self.weight


NORMS = {"layernorm": LayerNorm, "rmsnorm": RMSNorm}


def make_norm(config) -> nn.Module:
    return NORMS[config.norm](config.n_embd, eps=config.norm_eps, bias=config.bias)
