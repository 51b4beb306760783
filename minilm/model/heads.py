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


class Pooler(nn.Module):
    """BERT's pooler, pooled = tanh(W x + b) -> (B, C), where x is the [CLS] (first) state
    (pooling "cls", BERT's) or the mean of the real tokens' states (pooling "mean",
    x = sum_t m_t h_t / sum_t m_t, m_t = 1 for a real token, 0 for padding; Reimers and Gurevych
    2019). A checkpoint pretrained without a sentence objective (MLM alone) has taught its [CLS]
    state nothing of its own; the mean reads every token it has learned."""

    def __init__(self, config):
        super().__init__()
        self.mean = config.pooling == "mean"
        self.dense = nn.Linear(config.n_embd, config.n_embd)

    def forward(self, h, attention_mask=None):  # (B, T, C) -> (B, C)
        if not self.mean:
            return torch.tanh(self.dense(h[:, 0]))
        m = torch.ones(h.shape[:2], device=h.device) if attention_mask is None else attention_mask.to(h.dtype)  # (B, T)
        x = (h * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True).clamp(min=1)  # (B, C)
        return torch.tanh(self.dense(x))


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
