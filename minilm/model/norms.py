"""Normalisation layers: LayerNorm and RMSNorm, chosen by `ModelConfig.norm` (registered by name:
minilm/model/registry.py).

Notation: x is (..., C); statistics are taken over the last dimension C. Each layer computes its
equation with PyTorch's fused function; `layer_norm_reference` and `rms_norm_reference` spell the
same equations out, and the tests hold the two equal, forward and backward.
"""

import torch
import torch.nn.functional as F
from torch import nn

from minilm.model.registry import lookup, register


def layer_norm_reference(x, weight, bias, eps):
    mean = x.mean(dim=-1, keepdim=True)
    var = (x - mean).pow(2).mean(dim=-1, keepdim=True)  # biased variance
    y = (x - mean) * torch.rsqrt(var + eps) * weight
    return y + bias if bias is not None else y


def rms_norm_reference(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * weight


@register("norm", "layernorm")
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
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


@register("norm", "rmsnorm")
class RMSNorm(nn.Module):
    """Root-mean-square normalisation (Zhang & Sennrich 2019), no mean subtraction and no bias:

        y = x / sqrt(mean(x^2) + eps) * gamma
    """

    def __init__(self, n_embd: int, eps: float = 1e-5, bias: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n_embd))  # gamma

    def forward(self, x):
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)


def make_norm(config) -> nn.Module:
    """The norm `config.norm` names: a built-in or a registered one (minilm/model/registry.py)."""
    return lookup("norm", config.norm)(config.n_embd, eps=config.norm_eps, bias=config.bias)
