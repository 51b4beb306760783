"""Bottleneck adapters (Houlsby et al. 2019, "Parameter-Efficient Transfer Learning for NLP").

A small residual network after a sublayer's output projection:

    y = W x + b                                    the frozen projection (attention's W^O, the FFN's W_2)
    y <- y + W_up f(W_down y + b_down) + b_up      W_down (m, C), W_up (C, m), m << C; f = GELU

W_up and b_up start at zero, so every adapter starts as the identity and the model as the
pretrained one. 2 m C + m + C numbers per adapter; two adapters per block, as in the paper.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn


class AdapterLinear(nn.Module):
    def __init__(self, base: nn.Linear, size: int):
        super().__init__()
        if size < 1:
            raise ValueError(f"adapter size must be >= 1, got {size}")
        self.base = base
        C = base.out_features
        self.down = nn.Linear(C, size, dtype=base.weight.dtype, device=base.weight.device)
        self.up = nn.Linear(size, C, dtype=base.weight.dtype, device=base.weight.device)
        nn.init.zeros_(self.up.weight)  # W_down keeps nn.Linear's default (Kaiming-uniform) initialisation
        nn.init.zeros_(self.up.bias)

    @property
    def weight(self):
        return self.base.weight

    @property
    def bias(self):
        return self.base.bias

    def forward(self, x):  # (..., in) -> (..., C)
        y = self.base(x)
        return y + self.up(F.gelu(self.down(y)))
