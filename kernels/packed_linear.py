"""Linear layers with weights prepacked for oneDNN: the fast path for decoding on CPU.

    y = x W^T + b        W (out, in), as in nn.Linear (the reference, F.linear)

A decoding step multiplies a few rows (one per sequence) by every weight matrix of the model, so
its time is the time it takes to read the weights from memory. PyTorch's default CPU product for
x W^T on a row-major (out, in) matrix reads them at about 13 GB/s on the 2-core machine minilm is
developed on; the same product with W reordered once into oneDNN's blocked layout reads them at
25-30 GB/s (1.5-2x faster per matrix). `packed_linears(model)` reorders every float32 Linear
weight (and the LM head) once and routes their forward through oneDNN until the block ends;
outside the block the model is exactly as before. The two paths differ only in the order of the
sums (|dy| ~ 1e-5 for unit-scale inputs); tests/test_kernels.py holds them equal.

A oneDNN call costs about 10 us more than F.linear's, whatever its size, so only matrices of at
least MIN_PACKED entries (512 KB in fp32: 384 x 384 and up) are packed; a 128-wide model keeps
F.linear everywhere (its matrices sit in cache and take 3-5 us).
"""

import contextlib

import torch
from torch import nn

from minilm.model.heads import LMHead

MIN_PACKED = 1 << 17  # weight entries; smaller matrices are read faster than a oneDNN call starts


def available() -> bool:
    """oneDNN is built into this torch and has the two ops used here."""
    ops = torch.ops.mkldnn
    return torch.backends.mkldnn.is_available() and hasattr(ops, "_reorder_linear_weight") and hasattr(ops, "_linear_pointwise")


def packed_linear(weight, bias=None):
    """A function x (..., in) -> (..., out) equal to F.linear(x, weight, bias), weight reordered once."""
    packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 1)  # blocked layout, tuned for few rows

    def forward(x):
        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")

    return forward


def packable(module) -> bool:
    """A plain nn.Linear or LM head with a float32 weight of at least MIN_PACKED entries on the CPU
    (subclasses with their own forward, quantized layers, other devices and FSDP shards, of which
    packing would pack one piece, keep their own path)."""
    if type(module) not in (nn.Linear, LMHead):
        return False
    w = module.weight
    sharded = type(w).__name__ == "DTensor"  # an FSDP shard (minilm.training.distributed.is_sharded)
    return not sharded and w.dtype == torch.float32 and w.device.type == "cpu" and w.numel() >= MIN_PACKED


def compiled(module) -> bool:
    """`module.compile()` was called on it (as --compile does per block): torch.compile traces its
    forward, and the layers inside it keep their own forward, which the compiler fuses and packs itself."""
    return getattr(module, "_compiled_call_impl", None) is not None


@contextlib.contextmanager
def packed_linears(model):
    """Inside the block, every packable layer of `model` runs on a prepacked copy of its weight.

    Meant for fp32 inference: where autograd is recording (the packed op has no backward), autocast
    is on (the packed op would not follow it) or oneDNN is missing, the block changes nothing; layers
    inside a compiled module are left to the compiler. The copies live as long as the block (the
    weights' memory twice over)."""
    if torch.is_grad_enabled() or torch.is_autocast_enabled("cpu") or not available():
        yield model
        return
    in_compiled = {id(m) for c in model.modules() if compiled(c) for m in c.modules()}
    swapped = []
    try:
        for m in model.modules():
            if packable(m) and "forward" not in m.__dict__ and id(m) not in in_compiled:  # not already packed by an outer block
                m.forward = packed_linear(m.weight, None if m.bias is None else m.bias.detach())
                swapped.append(m)
        yield model
    finally:
        for m in swapped:
            del m.forward  # the class's forward again
