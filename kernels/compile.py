"""torch.compile, applied per block or per function, with one notice and the eager path where it cannot run.

Compiling each Transformer block separately (rather than the whole model) bounds compile time:
all blocks of a stack share one graph, compiled once. `dynamic=True` keeps batches of varying
sequence length from recompiling.
"""

import torch

_warned = False
try:  # what torch.compile raises when it cannot compile (a missing C++ compiler, an unsupported op ...)
    from torch._dynamo.exc import TorchDynamoException as _DynamoError

    COMPILE_ERRORS = (_DynamoError, OSError)
except ImportError:  # pragma: no cover - a torch without dynamo
    COMPILE_ERRORS = (RuntimeError, OSError)


def notice_once(error: Exception):
    global _warned
    if not _warned:
        print(f"notice: torch.compile is unavailable here ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
              "running eager")
        _warned = True


def compile_blocks(model, dynamic: bool = True):
    """Replace each block of each stack by its compiled version, in place; returns the model.

    If torch.compile is unavailable or fails on this machine, prints one notice and leaves the
    eager model (the reference) in place."""
    try:
        stacks = [m for m in model.modules() if hasattr(m, "blocks")]
        for stack in stacks:
            for block in stack.blocks:
                block.compile(dynamic=dynamic)
    except Exception as e:  # no compiler toolchain, unsupported platform ...
        notice_once(e)
    return model


def fused(reference, dynamic: bool = True):
    """`reference` compiled by torch.compile on first call (its forward and backward fused into
    generated kernels); the reference itself wherever compilation fails, after one notice."""
    state = {"fn": None}

    def call(*args, **kwargs):
        if state["fn"] is None:
            state["fn"] = torch.compile(reference, dynamic=dynamic)
        if state["fn"] is not reference:
            try:
                return state["fn"](*args, **kwargs)
            except COMPILE_ERRORS as e:  # the compiler is missing or failed on this machine
                notice_once(e)
                state["fn"] = reference
        return reference(*args, **kwargs)

    call.reference = reference
    call.__name__ = f"fused_{reference.__name__}"
    call.__doc__ = f"torch.compile of {reference.__name__}, falling back to it. {reference.__doc__ or ''}"
    return call
