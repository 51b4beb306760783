"""Input embeddings: token, position (learned, sinusoidal or rotary) and segment (token type).

Notation: B batch, T time, C channels (n_embd), nh heads, hs head size.

    h_0 = E_tok[x_t] + E_pos[p_t] + E_seg[s_t]          (BERT, Devlin et al. 2019, fig. 2)

`scale_embedding` multiplies E_tok[x_t] by sqrt(C), as Vaswani et al. 2017 (section 3.4) do;
`pos_offset` reads the learned E_pos from row p_t + pos_offset (BART's table starts at row 2).

With `pos="rope"` no position vector is added here: rotary embeddings rotate the queries and
keys inside attention instead (`Rotary` below, used by minilm/model/attention.py); with `pos="alibi"`
each head adds a distance penalty to its attention scores instead (`ALiBi`). All four are
registered by name (minilm/model/registry.py), so a file of yours can add another.
"""

import math

import torch
from torch import nn

from minilm.model.dropout import make_dropout
from minilm.model.norms import make_norm
from minilm.model.registry import lookup, register


def sinusoidal_table(n_positions: int, n_embd: int) -> torch.Tensor:
    """The fixed encoding of Vaswani et al. 2017, section 3.5:

        PE[p, 2i] = sin(p / 10000^(2i/C)),   PE[p, 2i+1] = cos(p / 10000^(2i/C))
    """
    position = torch.arange(n_positions, dtype=torch.float32)[:, None]  # (P, 1)
    inv_freq = torch.exp(torch.arange(0, n_embd, 2, dtype=torch.float32) * (-math.log(10000.0) / n_embd))
    table = torch.zeros(n_positions, n_embd)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq[: n_embd // 2])
    return table  # (P, C)


@register("position", "learned")
class LearnedPosition(nn.Embedding):
    """E_pos, a trained table (BERT, GPT-2): position p reads row p + pos_offset."""

    def __init__(self, config):
        super().__init__(config.pos_offset + config.max_seq_len, config.n_embd)
        self.offset = config.pos_offset

    def forward(self, position_ids):  # (T,) or (B, T) -> (.., T, C)
        return super().forward(position_ids + self.offset)


@register("position", "sinusoidal")
class SinusoidalPosition(nn.Module):
    """The fixed table `sinusoidal_table`, not trained (and not saved)."""

    def __init__(self, config):
        super().__init__()
        self.register_buffer("table", sinusoidal_table(config.max_seq_len, config.n_embd), persistent=False)

    def forward(self, position_ids):  # (T,) or (B, T) -> (.., T, C)
        return self.table[position_ids]


@register("position", "rope")
def rotary_position(config):
    """Nothing added to the embeddings: `Rotary` rotates the queries and keys inside attention."""
    return None


rotary_position.bounded = False  # no table: any length


def alibi_slopes(n_head: int) -> torch.Tensor:
    """m_h for heads h = 1..nh: the geometric sequence 2^(-8h/nh) when nh is a power of two; else
    those of the power of two below it, then every other one of the next power's (Press et al. 2022,
    as their code does)."""
    def power_of_two(n):
        return [2 ** (-8 * h / n) for h in range(1, n + 1)]

    below = 2 ** math.floor(math.log2(n_head))
    slopes = power_of_two(below) + power_of_two(2 * below)[0::2][: n_head - below]
    return torch.tensor(slopes)  # (nh,)


@register("position", "alibi")
class ALiBi(nn.Module):
    """Attention with linear biases (Press et al. 2022, "Train Short, Test Long"): nothing is added
    to the embeddings; each head h adds -m_h * (i - j) to the score of query i for key j,

        scores_h = q_i . k_j / sqrt(hs) - m_h (i - j)        (causal: j <= i)

    and, without causal masking, -m_h |i - j| (a symmetric form, as encoders use it). The penalty
    grows with distance, so the model extrapolates to sequences longer than it was trained on."""

    bounded = False

    def __init__(self, config):
        super().__init__()
        self.register_buffer("slopes", alibi_slopes(config.n_head), persistent=False)  # (nh,)

    def forward(self, position_ids):
        return None  # nothing added to the embeddings

    def score_bias(self, T: int, S: int, dtype) -> torch.Tensor:
        """(1, nh, T, S): -m_h |i - j| for the T last of S positions."""
        query = torch.arange(S - T, S, device=self.slopes.device)[:, None]  # (T, 1)
        distance = (query - torch.arange(S, device=self.slopes.device)[None, :]).abs()  # (T, S)
        return (-self.slopes[:, None, None] * distance).to(dtype)[None]  # (1, nh, T, S)


class Embeddings(nn.Module):
    """Token + position + segment embeddings, then an optional norm and dropout."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.token = nn.Embedding(config.vocab_size, config.n_embd)  # E_tok
        self.position = lookup("position", config.pos)(config)  # E_pos: a module, or None (rope; minilm/model/registry.py)
        self.segment = nn.Embedding(config.n_segment, config.n_embd) if config.n_segment > 0 else None  # E_seg
        self.norm = make_norm(config) if config.embed_norm else None
        self.scale = math.sqrt(config.n_embd) if config.scale_embedding else None
        self.dropout = make_dropout(config.dropout)

    def forward(self, input_ids, position_ids, segment_ids=None):
        """input_ids (B, T), position_ids (B, T) or (T,), segment_ids (B, T) -> (B, T, C)."""
        x = self.token(input_ids)
        if self.scale is not None:
            x = x * self.scale
        added = self.position(position_ids) if self.position is not None else None  # (.., T, C), or None (rope, alibi)
        if added is not None:
            x = x + added.to(x.dtype)
        if self.segment is not None:
            x = x + self.segment(segment_ids if segment_ids is not None else torch.zeros_like(input_ids))
        if self.norm is not None:
            x = self.norm(x)
        return self.dropout(x)


class Rotary(nn.Module):
    """Rotary position embedding, RoPE (Su et al. 2021, "RoFormer").

    Each pair of channels (i, i + hs/2) of a query or key at position p is rotated by the angle
    p * theta^(-2i/hs):

        x' = x * cos(p w) + rotate_half(x) * sin(p w),   rotate_half([a, b]) = [-b, a]

    so q_m . k_n depends on m - n alone. (The half-split pairing of GPT-NeoX and LLaMA, not the
    interleaved pairing of the paper; both are the same function up to a channel permutation.)
    """

    def __init__(self, head_size: int, theta: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / theta ** (torch.arange(0, head_size, 2, dtype=torch.float32) / head_size)
        self.register_buffer("inv_freq", inv_freq, persistent=False)  # (hs/2,)

    def angles(self, position_ids):
        """position_ids (B, T) or (T,) -> cos, sin each (B or 1, 1, T, hs), broadcast over heads."""
        if position_ids.dim() == 1:
            position_ids = position_ids[None]
        freqs = position_ids[..., None].float() * self.inv_freq  # (B, T, hs/2)
        emb = torch.cat([freqs, freqs], dim=-1)[:, None]  # (B, 1, T, hs)
        return emb.cos(), emb.sin()


def apply_rotary(x, cos, sin):
    """x (B, nh, T, hs) rotated by the angles of `Rotary.angles`."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)  # rotate_half
    return (x * cos + rotated * sin).to(x.dtype)
