"""Prefix tuning (Li & Liang 2021, "Prefix-Tuning: Optimizing Continuous Prompts for Generation").

Every self-attention layer l gets P trainable key and value vectors per head, placed before the
keys and values of the real tokens, as if P virtual tokens came first:

    K_l = [Pk_l ; X W^K],  V_l = [Pv_l ; X W^V]        Pk_l, Pv_l (nh, P, hs); the weights frozen

Each query attends to the prefix and to what its mask allows of the sequence. The virtual tokens
take no positions (the real tokens still count from 0), so the prefix enters through the KV cache
(minilm/model/attention.py) as P cached positions. The prefix is trained directly, without the paper's
MLP reparametrisation (as in P-tuning v2, Liu et al. 2022). 2 L P C numbers in all.
"""

from __future__ import annotations

import torch
from torch import nn

from minilm.model.attention import KVCache


class Prefix(nn.Module):
    def __init__(self, n_layer: int, n_head: int, head_size: int, length: int, dtype=None, device=None):
        super().__init__()
        if length < 1:
            raise ValueError(f"prefix length must be >= 1, got {length}")
        self.length = length
        self.keys = nn.Parameter(torch.randn(n_layer, n_head, length, head_size, dtype=dtype, device=device) * 0.02)
        self.values = nn.Parameter(torch.randn(n_layer, n_head, length, head_size, dtype=dtype, device=device) * 0.02)

    def fill(self, cache: KVCache, batch_size: int) -> None:
        """Put the prefix in an empty cache as every layer's first P positions: (B, nh, P, hs)."""
        for layer in range(self.keys.shape[0]):
            k = self.keys[layer].unsqueeze(0).expand(batch_size, -1, -1, -1)
            v = self.values[layer].unsqueeze(0).expand(batch_size, -1, -1, -1)
            cache.self_kv[layer] = (k, v)
