"""Element-wise chains that eager PyTorch runs as several passes over memory, fused into one.

Notation: B batch, T time, C channels, F feed-forward width.

    bias + GELU:       y = GELU(x + b)                        x (B, T, F), b (F,)
    residual + norm:   s = x + r,  y = LayerNorm(s) = (s - mean(s)) / sqrt(var(s) + eps) * gamma + beta

Eager, each `+`, the GELU and the norm's statistics read and write the whole tensor; compiled,
each chain is one generated loop (and its backward another). The references are the readable
definitions; `bias_gelu` and `residual_layer_norm` are the same functions through torch.compile
(kernels/compile.py), tested equal forward and backward in tests/test_kernels.py.
"""

import torch.nn.functional as F

from kernels.compile import fused


def reference_bias_gelu(x, bias):
    """GELU(x + b) with the exact (erf) GELU, as BERT and GPT-2's MLPs (before W_2) use it."""
    return F.gelu(x + bias)


def reference_residual_layer_norm(x, residual, weight, bias, eps: float = 1e-5):
    """(s, LayerNorm(s)) with s = x + residual: the pre-norm block's update and the next norm."""
    s = x + residual
    return s, F.layer_norm(s, s.shape[-1:], weight, bias, eps)


bias_gelu = fused(reference_bias_gelu)
residual_layer_norm = fused(reference_residual_layer_norm)
