"""Compile a model block by block with torch.compile.

Compiling each Transformer block separately (rather than the whole model) bounds compile time:
all blocks of a stack share one graph, compiled once. `dynamic=True` keeps batches of varying
sequence length from recompiling.
"""

import torch

_warned = False


def compile_blocks(model, dynamic: bool = True):
    """Replace each block of each stack by its compiled version, in place; returns the model.

    If torch.compile is unavailable or fails on this machine, prints one notice and leaves the
    eager model (the reference) in place."""
    global _warned
    try:
        stacks = [m for m in model.modules() if hasattr(m, "blocks")]
        for stack in stacks:
            for i, block in enumerate(stack.blocks):
                block.compile(dynamic=dynamic)
    except Exception as e:  # no compiler toolchain, unsupported platform ...
        if not _warned:
            print(f"notice: torch.compile is unavailable here ({type(e).__name__}: {e}); running eager")
            _warned = True
    return model
