"""Multi-head attention: self-attention (causal or not), cross-attention, masks and the KV cache.

Notation: B batch, T query time, S key time, C channels (n_embd), nh heads, hs head size (C / nh).

    Attention(Q, K, V) = softmax(Q K^T / sqrt(hs) + M) V          (Vaswani et al. 2017, eq. 1)
    MultiHead(x) = Concat(head_1, ..., head_nh) W^O,   head_i = Attention(x W^Q_i, x W^K_i, x W^V_i)

Grouped-query attention (Ainslie et al. 2023; `n_kv_head`): only n_kv heads of keys and values are
projected (and cached); query head i attends with key/value head i // (nh / n_kv). n_kv = 1 is
multi-query attention (Shazeer 2019), n_kv = nh plain multi-head attention. QK-norm (`qk_norm`;
Dehghani et al. 2023) normalises each head's queries and keys over hs, with learned gains, before
rotary positions and the scores, which keeps the logits of attention from growing without bound.

M is an additive bias: 0 where a query may look, a very negative number where it may not (a later
position under causal masking, a padding key). It is written twice, chosen by
`ModelConfig.attn_impl`: "math" spells out the equation above; "sdpa" hands the same tensors to
`torch.nn.functional.scaled_dot_product_attention`, which picks a fused kernel. Tests hold the two
equal, forward and backward.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from minilm.model.dropout import make_dropout
from minilm.model.embeddings import apply_rotary
from minilm.model.registry import lookup, register


class KVCache:
    """Keys and values of the positions already decoded, one entry per decoder layer.

    Self-attention appends the new step's keys and values; cross-attention keys and values are
    projected from the encoder output once and reused at every step. With a `capacity` (the most
    positions a layer will hold: prompt + new tokens), each layer's keys and values live in one
    buffer reserved at the first step and written in place, so a step copies only its own
    position instead of the whole cache; past the capacity (or without one) they grow by
    concatenation.
    """

    def __init__(self, capacity: int | None = None):
        self.capacity = capacity
        self.self_kv = {}  # layer index -> (k, v), each (B, nh, S_past, hs)
        self.cross_kv = {}  # layer index -> (k, v), each (B, nh, S_enc, hs)
        self.buffers = {}  # layer index -> (K, V), each (B, nh, capacity, hs); self_kv holds views of their first S_past

    @property
    def length(self) -> int:
        """How many positions are cached (0 for an empty cache)."""
        if not self.self_kv:
            return 0
        k, _ = next(iter(self.self_kv.values()))
        return k.shape[2]

    def snapshot(self):
        """What `restore` needs to undo the appends made after this call: the entries as they are
        now (appends write past their ends into the buffers, or make new tensors)."""
        return dict(self.self_kv), dict(self.cross_kv), dict(self.buffers)

    def restore(self, snapshot):
        self.self_kv, self.cross_kv, self.buffers = (dict(d) for d in snapshot)

    def append(self, layer: int, k, v):
        """Add k, v (B, nh, T, hs) after the layer's past; returns all of them, (B, nh, S, hs)."""
        past = self.self_kv.get(layer)
        P = past[0].shape[2] if past is not None else 0
        S = P + k.shape[2]
        if self.capacity is None or S > self.capacity:
            self.buffers.pop(layer, None)
            if past is not None:
                k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)  # (B, nh, S, hs)
            self.self_kv[layer] = (k, v)
            return k, v
        if layer not in self.buffers:
            B, nh, _, hs = k.shape
            K, V = k.new_empty(B, nh, self.capacity, hs), v.new_empty(B, nh, self.capacity, hs)
            if past is not None:  # positions set before the first append (a prefix's virtual keys and values)
                K[:, :, :P], V[:, :, :P] = past
            self.buffers[layer] = (K, V)
        K, V = self.buffers[layer]
        K[:, :, P:S], V[:, :, P:S] = k, v
        self.self_kv[layer] = (K[:, :, :S], V[:, :, :S])
        return self.self_kv[layer]

    def reorder(self, index):
        """Keep batch rows `index` (B',) of every entry (beam search)."""
        self.buffers = {i: (K[index], V[index]) for i, (K, V) in self.buffers.items()}
        self.self_kv = {
            i: ((self.buffers[i][0][:, :, : k.shape[2]], self.buffers[i][1][:, :, : k.shape[2]]) if i in self.buffers else (k[index], v[index]))
            for i, (k, v) in self.self_kv.items()
        }
        self.cross_kv = {i: (k[index], v[index]) for i, (k, v) in self.cross_kv.items()}


def attention_bias(key_mask, T: int, S: int, causal: bool, dtype, device, window: int | None = None):
    """The additive mask M, (B or 1, 1, T, S), or None when nothing is masked.

    key_mask (B, S): 1 for real keys, 0 for padding; or (B, T, S): 1 where query i may see key j
    (documents packed into one row, each seeing only itself). Under causal masking the T queries are the
    last T of the S positions, so query i may look at keys j <= S - T + i. Masked entries get the
    dtype's most negative finite value, not -inf, so that a row with every key masked (a padded
    query) gives a finite, ignored output instead of NaN.

    Sliding-window attention (`window` W; Beltagy et al. 2020, Mistral): query i sees only the keys
    less than W positions away, i - W < j (and j <= i, causal), or |i - j| < W without causal masking.
    """
    if key_mask is None and (not causal or T == 1) and (window is None or S <= window):
        return None  # nothing to hide: no padding, a single (last) query may see every key, all within the window
    allowed = torch.ones(1, 1, T, S, dtype=torch.bool, device=device)
    if causal:
        allowed = torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=S - T)[None, None]
    if window is not None:
        query = torch.arange(S - T, S, device=device)[:, None]  # (T, 1): each query's position among the S
        distance = query - torch.arange(S, device=device)[None, :]  # (T, S): i - j
        allowed = allowed & (distance.abs() < window)[None, None]
    if key_mask is not None:
        if key_mask.shape[-1] != S or (key_mask.dim() == 3 and key_mask.shape[1] != T):
            raise ValueError(f"attention_mask of shape {tuple(key_mask.shape)} does not cover {T} queries x {S} keys")
        if key_mask.dim() == 3:
            allowed = allowed & key_mask.bool()[:, None, :, :]  # (B, 1, T, S)
        else:
            allowed = allowed & key_mask.bool()[:, None, None, :]  # (B, 1, T, S)
    bias = torch.zeros(allowed.shape, dtype=dtype, device=device)
    return bias.masked_fill(~allowed, torch.finfo(dtype).min)


@register("attention", "math")
def math_attention(q, k, v, bias, dropout_p: float, training: bool, is_causal: bool = False):
    """softmax(Q K^T / sqrt(hs) + M) V, spelled out. q (B, nh, T, hs), k and v (B, nh, S, hs).
    The mask M always comes in `bias` (this function does not set `handles_causal`)."""
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))  # (B, nh, T, S)
    if bias is not None:
        att = att + bias
    att = F.softmax(att, dim=-1, dtype=torch.promote_types(att.dtype, torch.float32)).to(q.dtype)  # fp16/bf16 upcast, fp64 kept
    att = F.dropout(att, p=dropout_p, training=training)
    return att @ v  # (B, nh, T, hs)


@register("attention", "sdpa")
def sdpa_attention(q, k, v, bias, dropout_p: float, training: bool, is_causal: bool = False):
    """The same function through PyTorch's fused scaled_dot_product_attention, which applies a
    plain causal mask itself (is_causal) when there is no bias tensor."""
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=bias, dropout_p=dropout_p if training else 0.0, is_causal=is_causal and bias is None
    )


sdpa_attention.handles_causal = True


class MultiHeadAttention(nn.Module):
    """Self-attention (`cross=False`) or cross-attention over an encoder output (`cross=True`)."""

    def __init__(self, config, causal: bool = False, cross: bool = False, layer: int = 0):
        super().__init__()
        self.n_head = config.n_head if cross else config.heads_in(layer)  # nh: fewer than n_head after structured pruning
        self.n_kv_head = config.kv_heads if self.n_head == config.n_head else self.n_head  # n_kv: as many as nh when pruned
        self.head_size = config.head_size
        self.causal, self.cross, self.layer = causal, cross, layer
        self.attend = lookup("attention", config.attn_impl)  # math, sdpa or a registered one (minilm/model/registry.py)
        self.attn_dropout = config.attn_dropout
        C, inner, kv = config.n_embd, self.n_head * self.head_size, self.n_kv_head * self.head_size  # inner = C unless heads were pruned
        self.q_proj = nn.Linear(C, inner, bias=config.bias)  # W^Q
        self.k_proj = nn.Linear(C, kv, bias=config.bias)  # W^K
        self.v_proj = nn.Linear(C, kv, bias=config.bias)  # W^V
        self.o_proj = nn.Linear(inner, C, bias=config.bias)  # W^O
        norm = lookup("norm", config.norm)
        self.q_norm = norm(self.head_size, eps=config.norm_eps, bias=config.bias) if config.qk_norm else None
        self.k_norm = norm(self.head_size, eps=config.norm_eps, bias=config.bias) if config.qk_norm else None
        self.head_gate = None  # (nh,) a multiplier on each head's output: head importance (minilm/training/prune.py) reads its gradient
        self.dropout = make_dropout(config.dropout)

    def split_heads(self, x, heads: int | None = None):
        B, T, _ = x.shape
        return x.view(B, T, heads or self.n_head, self.head_size).transpose(1, 2)  # (B, nh, T, hs)

    def project_kv(self, x):
        """Keys and values of x (B, S, C): (B, n_kv, S, hs) each, keys normalised under QK-norm."""
        k, v = self.split_heads(self.k_proj(x), self.n_kv_head), self.split_heads(self.v_proj(x), self.n_kv_head)
        return (self.k_norm(k) if self.k_norm is not None else k), v

    def forward(self, x, bias=None, memory=None, rope=None, cache: KVCache | None = None, layer: int | None = None,
                keep: int | None = None):
        """x (B, T, C); memory (B, S, C) for cross-attention; bias (B or 1, 1, T, S) -> (B, T, C).

        rope: (cos, sin) from `Rotary.angles` for the T new positions, or None. layer: the index of
        the cache's entry, when one module serves several layers (weights shared across layers).
        keep: queries at the first `keep` positions only (self-attention; keys and values still
        come from all of x) -> (B, keep, C): the same rows as the full output's first `keep`.
        """
        layer = self.layer if layer is None else layer
        queries = x if keep is None else x[:, :keep]  # (B, T or keep, C)
        B, T, C = queries.shape
        q = self.split_heads(self.q_proj(queries))  # (B, nh, T, hs)
        if self.q_norm is not None:
            q = self.q_norm(q)
        if self.cross:
            if cache is not None and layer in cache.cross_kv:
                k, v = cache.cross_kv[layer]
            else:
                k, v = self.project_kv(memory)  # (B, n_kv, S, hs)
                if cache is not None:
                    cache.cross_kv[layer] = (k, v)
        else:
            k, v = self.project_kv(x)  # (B, n_kv, T, hs), every position even when keep limits the queries
            if rope is not None:
                cos, sin = rope  # (B or 1, 1, T, hs) each
                q, k = apply_rotary(q, cos[:, :, : q.shape[2]], sin[:, :, : q.shape[2]]), apply_rotary(k, cos, sin)
            if cache is not None:
                k, v = cache.append(layer, k, v)  # (B, n_kv, S, hs), S = past + T: the cache holds n_kv heads only
        if self.n_kv_head != self.n_head:  # each key/value head serves nh / n_kv consecutive query heads
            group = self.n_head // self.n_kv_head
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)  # (B, nh, S, hs)
        dropout_p = self.attn_dropout if self.training else 0.0
        # with no padding and no cache the causal mask is implicit, which lets SDPA use its fastest kernel
        if keep is not None and bias is not None:
            bias = bias[:, :, :keep]  # (B or 1, 1 or nh, keep, S): the kept queries' rows
        y = self.attend(q, k, v, bias, dropout_p, self.training, is_causal=self.causal and k.shape[2] == T)
        if self.head_gate is not None:
            y = y * self.head_gate.view(1, -1, 1, 1)  # (B, nh, T, hs), head h scaled by xi_h
        y = y.transpose(1, 2).contiguous().view(B, T, self.n_head * self.head_size)  # (B, T, nh, hs) -> (B, T, nh hs)
        return self.dropout(self.o_proj(y))
