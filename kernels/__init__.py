"""Optional speed: fused paths, each beside the readable reference it must equal.

    kernels/attention.py      softmax(Q K^T / sqrt(hs) + M) V: SDPA, and the math path compiled
    kernels/pointwise.py      GELU(x + b); (x + r, LayerNorm(x + r)), compiled
    kernels/cross_entropy.py  the LM head + cross-entropy in chunks of rows, never all N x V logits at once
    kernels/compile.py        torch.compile per block or per function, with one notice and the eager
                              reference where compilation is unavailable

Nothing here is required: every op has its eager reference in the same file (or in minilm/), and
tests/test_kernels.py holds each pair equal, forward and backward.
"""

from kernels.compile import compile_blocks, fused

__all__ = ["compile_blocks", "fused"]
