"""LoRA: low-rank adaptation of a frozen linear layer (Hu et al. 2021, "LoRA: Low-Rank Adaptation
of Large Language Models").

    h = W x + b + (alpha / r) * B A dropout(x)        W (out, in) and b frozen
                                                       A (r, in), Kaiming-uniform; B (out, r), zeros

B = 0 makes the adapted layer start as the pretrained one. Only A and B are trained: r (in + out)
numbers per layer instead of in x out. For inference the update folds into the weight,
W' = W + (alpha / r) B A, and the layer is a plain nn.Linear again (`merge`).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LowRankLinear(nn.Module):
    """A frozen nn.Linear plus a trained low-rank update scaled by alpha / r, which `merge` folds
    into the weight; a subclass holds the update's factors and writes `delta` (out, in) and `forward`."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if r < 1:
            raise ValueError(f"{type(self).__name__}: the rank must be >= 1, got {r}")
        self.base = base
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        self.dropout = nn.Dropout(dropout)

    @property
    def weight(self):  # the frozen W, for code that reads a projection's weight
        return self.base.weight

    @property
    def bias(self):
        return self.base.bias

    def delta(self) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        """The plain linear layer W' = W + (alpha / r) delta with the same bias."""
        merged = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None,
                           dtype=self.base.weight.dtype, device=self.base.weight.device)
        merged.weight.copy_(self.base.weight + self.scaling * self.delta())
        if self.base.bias is not None:
            merged.bias.copy_(self.base.bias)
        return merged


class LoRALinear(LowRankLinear):
    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0):
        super().__init__(base, r, alpha, dropout)
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, dtype=base.weight.dtype, device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, dtype=base.weight.dtype, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear initialises its weight

    def forward(self, x):  # (..., in) -> (..., out)
        return self.base(x) + (self.dropout(x) @ self.lora_A.T @ self.lora_B.T) * self.scaling

    def delta(self) -> torch.Tensor:
        """B A (out, in)."""
        return self.lora_B @ self.lora_A
