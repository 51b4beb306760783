"""Heads: map hidden states (B, T, C) to the logits of a task. Losses live in minilm/objectives.py
(the LM head also sums its own loss, to choose how: LMHead.loss_sum).

Notation: B batch, T time, C channels, V vocabulary, L labels.
"""

import torch
from torch import nn

from minilm.model.dropout import make_dropout
from minilm.model.mlp import ACTIVATIONS
from minilm.model.norms import make_norm
from minilm.objectives import count_targets, cross_entropy_sum


class LMHead(nn.Module):
    """logits = h E^T: next-token (or masked-token) scores over the vocabulary.

    With `tie_embeddings` the output matrix is the token embedding E itself (Press & Wolf 2017),
    as in GPT-2; the model ties it by sharing the Parameter.
    """

    def __init__(self, config, bias: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(config.vocab_size, config.n_embd))  # (V, C)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size)) if bias else None
        self.loss_impl = getattr(config, "loss_impl", "logits")

    def forward(self, h):  # (B, T, C) -> (B, T, V)
        return nn.functional.linear(h, self.weight, self.bias)

    def loss_sum(self, h, labels):
        """sum_i CE(h_i W^T + b, y_i) over the targets (y_i != IGNORE_INDEX) and their count.
        h (B, T, C), labels (B, T). "logits": through the full (B, T, V) logits, as written;
        "chunked": the same sum in chunks of rows, never all logits at once (kernels/cross_entropy.py)."""
        if self.loss_impl == "chunked":
            from kernels.cross_entropy import chunked_cross_entropy

            return chunked_cross_entropy(h.reshape(-1, h.shape[-1]), self.weight, self.bias, labels.reshape(-1)), count_targets(labels)
        return cross_entropy_sum(self(h), labels)


class MLMHead(nn.Module):
    """BERT's masked-LM head: transform h -> act(W h + b) -> LN, then the tied output layer + bias.
    `n_in`: the width of h when it differs from the output embeddings' (ELECTRA's narrower generator)."""

    def __init__(self, config, n_in: int | None = None):
        super().__init__()
        self.dense = nn.Linear(n_in or config.n_embd, config.n_embd)
        self.act = ACTIVATIONS["gelu_tanh" if config.mlp == "gelu_tanh" else "gelu"]
        self.norm = make_norm(config)
        self.decoder = LMHead(config, bias=True)

    def forward(self, h):  # (..., C) -> (..., V); called on masked positions alone when training
        return self.decoder(self.norm(self.act(self.dense(h))))


def pool(h, attention_mask=None, pooling: str = "mean"):
    """One vector per text, (B, T, C) -> (B, C): the [CLS] (first) state (pooling "cls", BERT's) or
    the mean of the real tokens' states (pooling "mean", x = sum_t m_t h_t / sum_t m_t, m_t = 1 for a
    real token, 0 for padding; Reimers and Gurevych 2019)."""
    if pooling == "cls":
        return h[:, 0]
    m = torch.ones(h.shape[:2], device=h.device) if attention_mask is None else attention_mask.to(h.dtype)  # (B, T)
    return (h * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True).clamp(min=1)  # (B, C)


class Pooler(nn.Module):
    """BERT's pooler, pooled = tanh(W x + b) -> (B, C), where x = pool(h) is the [CLS] state or the
    mean of the real tokens' states (config.pooling). A checkpoint pretrained without a sentence
    objective (MLM alone) has taught its [CLS] state nothing of its own, and fine-tuning teaches it:
    the two tie on dev with minilm-mini. [CLS] pooling lets the encoder compute the last block at
    [CLS] alone (Encoder.reads_cls_only)."""

    def __init__(self, config):
        super().__init__()
        self.pooling = config.pooling
        self.dense = nn.Linear(config.n_embd, config.n_embd)

    def forward(self, h, attention_mask=None):  # (B, T, C) -> (B, C)
        return torch.tanh(self.dense(pool(h, attention_mask, self.pooling)))


class PairHead(nn.Module):
    """Sentence-BERT's heads on a text pair encoded apart (Reimers and Gurevych 2019): u, v (B, C)
    are the two texts' pooled states (`pool`, no dense layer), compared as vectors.

        regression (n_out = 1)   y = w cos(u, v) + b, w and b scalars: `fit_range(lo, hi)` maps the
                                 cosine's [0, 1] onto the labels' range (SBERT trains cos against
                                 score / 5 on STS-B, the same line)
        classification           logits = W [u; v; |u - v|] + b  -> (B, L)

    Each text's vector is its own, so one text can be encoded once and compared with many (search,
    clustering: `infer.py embed`), which a cross-encoder's joint sequence cannot."""

    def __init__(self, config, n_out: int):
        super().__init__()
        self.n_out = n_out
        if n_out == 1:
            self.scale = nn.Parameter(torch.ones(()))  # w
            self.shift = nn.Parameter(torch.zeros(()))  # b
        else:
            self.dropout = make_dropout(config.dropout)
            self.out = nn.Linear(3 * config.n_embd, n_out)

    @torch.no_grad()
    def fit_range(self, low: float, high: float) -> None:
        """Regression: start from y = lo + (hi - lo) cos(u, v), so the first steps need not learn the scale."""
        self.scale.fill_(high - low)
        self.shift.fill_(low)

    def forward(self, u, v):  # (B, C), (B, C) -> (B,) or (B, L)
        if self.n_out == 1:
            return self.scale * nn.functional.cosine_similarity(u.float(), v.float(), dim=-1) + self.shift
        return self.out(self.dropout(torch.cat([u, v, (u - v).abs()], dim=-1)))


def last_token(h, attention_mask=None):
    """The hidden state at each row's last real position (right padding) -> (B, C). GPT's pooling."""
    if attention_mask is None:
        return h[:, -1]
    last = attention_mask.long().sum(dim=1).clamp(min=1) - 1  # (B,)
    return h[torch.arange(h.shape[0], device=h.device), last]


class Classifier(nn.Module):
    """Dropout and one linear layer: pooled (B, C) -> (B, L), or per token (B, T, C) -> (B, T, L)."""

    def __init__(self, config, n_out: int):
        super().__init__()
        self.dropout = make_dropout(config.dropout)
        self.out = nn.Linear(config.n_embd, n_out)

    def forward(self, h):
        return self.out(self.dropout(h))
