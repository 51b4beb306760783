"""Attention's fused paths beside the readable one (minilm/model/attention.py: math_attention).

    softmax(Q K^T / sqrt(hs) + M) V

`sdpa_attention` (in minilm/model/attention.py, `attn_impl="sdpa"`) hands the masks minilm builds to
PyTorch's scaled_dot_product_attention; `compiled_math_attention` is the readable math path
through torch.compile, which fuses the scale, the mask, the softmax and its backward. Both are
tested equal to `math_attention`, forward and backward, with padding and causal masks
(tests/test_kernels.py).
"""

from kernels.compile import fused
from minilm.model.attention import math_attention, sdpa_attention

compiled_math_attention = fused(math_attention)

__all__ = ["compiled_math_attention", "math_attention", "sdpa_attention"]
