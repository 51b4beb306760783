"""Optional speed: fused paths, each beside the readable reference it must equal.

    kernels/attention.py      softmax(Q K^T / sqrt(hs) + M) V: SDPA, and the math path compiled
    kernels/pointwise.py      GELU(x + b); (x + r, LayerNorm(x + r)), compiled
    kernels/cross_entropy.py  the LM head + cross-entropy in chunks of rows, never all N x V logits at once
    kernels/packed_linear.py  Linear layers on oneDNN-prepacked weights, for decoding on CPU
    kernels/adam.py           Adam(W)'s update of a tensor as one compiled loop
    kernels/compile.py        torch.compile per block or per function, with one notice and the eager
                              reference where compilation is unavailable

Nothing here is required: every op has its eager reference in the same file (or in minilm/), and
tests/test_kernels.py holds each pair equal, forward and backward.
"""

__all__ = ["compile_blocks", "fused"]


def __getattr__(name):
    """kernels.compile_blocks and kernels.fused, imported on first use: torch.compile's machinery
    (torch._dynamo) costs about 70 MB and a second to import, which decoding and the eager paths
    never need."""
    if name in __all__:
        from kernels import compile as compile_module

        return getattr(compile_module, name)
    raise AttributeError(f"module 'kernels' has no attribute {name!r}")
