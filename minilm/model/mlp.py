"""The position-wise feed-forward network, chosen by `ModelConfig.mlp`.

Notation: B batch, T time, C channels (n_embd), F inner size (d_ff).
"""

import math

import torch.nn.functional as F
from torch import nn

from minilm.model.dropout import make_dropout
from minilm.model.registry import lookup, register


def gelu_reference(x):
    return 0.5 * x * (1.0 + (x / math.sqrt(2.0)).erf())


def gelu_tanh_reference(x):
    return 0.5 * x * (1.0 + (math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))).tanh())


def gelu(x):
    """GELU (Hendrycks & Gimpel 2016), exact: x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)). BERT's choice.

    Computed by PyTorch's fused kernel; `gelu_reference` spells it out (tests hold them equal)."""
    return F.gelu(x)


def gelu_tanh(x):
    """GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). GPT-2's choice."""
    return F.gelu(x, approximate="tanh")


ACTIVATIONS = {"gelu": gelu, "gelu_tanh": gelu_tanh, "relu": F.relu}


@register("mlp", "gelu")
@register("mlp", "gelu_tanh")
@register("mlp", "relu")
class FeedForward(nn.Module):
    """FFN(x) = W_2 act(W_1 x + b_1) + b_2 (Vaswani et al. 2017, eq. 2, with GELU or ReLU)."""

    def __init__(self, config, inner: int | None = None):
        super().__init__()
        inner = inner or config.ff_size  # F: d_ff, or fewer neurons after structured pruning
        self.act = ACTIVATIONS[config.mlp]
        self.fc1 = nn.Linear(config.n_embd, inner, bias=config.bias)  # W_1
        self.fc2 = nn.Linear(inner, config.n_embd, bias=config.bias)  # W_2
        self.dropout = make_dropout(config.dropout)

    def forward(self, x):  # (B, T, C) -> (B, T, C)
        return self.dropout(self.fc2(self.act(self.fc1(x))))  # (B, T, F) inside


@register("mlp", "swiglu")
class SwiGLU(nn.Module):
    """FFN_SwiGLU(x) = W_2 (Swish(W_1 x) * (W_3 x)) (Shazeer 2020, "GLU Variants Improve Transformer").

    Like LLaMA, the inner size is 2/3 of d_ff (rounded up to a multiple of 8), so the three
    matrices hold about as many parameters as the two of the plain FFN.
    """

    def __init__(self, config, inner: int | None = None):
        super().__init__()
        hidden = inner or 8 * math.ceil(2 * config.ff_size / 3 / 8)
        self.fc1 = nn.Linear(config.n_embd, hidden, bias=config.bias)  # W_1, the gate
        self.fc3 = nn.Linear(config.n_embd, hidden, bias=config.bias)  # W_3, the value
        self.fc2 = nn.Linear(hidden, config.n_embd, bias=config.bias)  # W_2
        self.dropout = make_dropout(config.dropout)

    def forward(self, x):  # (B, T, C) -> (B, T, C)
        return self.dropout(self.fc2(F.silu(self.fc1(x)) * self.fc3(x)))


def make_mlp(config, layer: int = 0) -> nn.Module:
    """The feed-forward network of block `layer` (its inner size from config.layer_ff after pruning)."""
    inner = config.layer_ff[layer] if config.layer_ff is not None else None
    return lookup("mlp", config.mlp)(config, inner)  # a built-in or a registered one (minilm/model/registry.py)
