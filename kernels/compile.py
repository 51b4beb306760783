"""torch.compile, applied per block or per function, with one notice and the eager path where it cannot run.

Compiling each Transformer block separately (rather than the whole model) bounds compile time:
all blocks of a stack share one graph, compiled once. `dynamic=True` keeps batches of varying
sequence length from recompiling.
"""

import torch

_warned = False
try:  # what torch.compile raises when it cannot compile (the compiler failed or is missing: no C++ compiler,
    # no Triton, a GPU too old for it; an unsupported construct), not the errors it finds in the model
    # itself (a shape mismatch met while tracing is the model's error)
    from torch._dynamo import exc as _exc

    COMPILE_ERRORS = (getattr(_exc, "ShortenTraceback", _exc.BackendCompilerFailed), _exc.BackendCompilerFailed,
                      _exc.InternalTorchDynamoError, _exc.Unsupported, OSError)
except ImportError:  # pragma: no cover - a torch without dynamo
    COMPILE_ERRORS = (RuntimeError, OSError)


def notice_once(error: Exception):
    global _warned
    if not _warned:
        cause = getattr(error, "inner_exception", None) or error  # the compiler's own error, where torch wrapped it
        print(f"notice: torch.compile is unavailable here ({type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}); "
              "running eager")
        _warned = True


def compile_blocks(model, dynamic: bool = True):
    """Replace each block of each stack by its compiled version, in place; returns the model.

    If torch.compile is unavailable or fails on this machine, now or at a block's first forward
    call, prints one notice and leaves the eager model (the reference) in place."""
    try:
        blocks = [block for m in model.modules() if hasattr(m, "blocks") for block in m.blocks]
        keep_cache_writes_eager()
        for block in blocks:
            block.compile(dynamic=dynamic)
            block._compiled_call_impl = eager_on_failure(block, blocks)
    except Exception as e:  # no compiler toolchain, unsupported platform ...
        notice_once(e)
    return model


def keep_cache_writes_eager():
    """Decoding writes each step's keys and values into views of the KV cache's reserved buffers
    (KVCache.append). Inductor cannot compile a write into a view of a tensor handed to the graph
    (it fails on the first decoding step of an encoder-decoder, or with beams), so that method runs
    outside the compiled graph: one graph break per block and step."""
    from minilm.model.attention import KVCache

    if not getattr(KVCache.append, "_minilm_eager", False):
        KVCache.append = torch.compiler.disable(KVCache.append)
        KVCache.append._minilm_eager = True


def eager_on_failure(block, blocks):
    """`block`'s compiled call, which, where compilation fails at a forward call, prints one
    notice and returns every block of `blocks` to eager for good, then makes the call again,
    eagerly. A graph compiled and run before the one that failed may have appended to the KV
    cache (KVCache.append is a graph break), so the cache is put back as it was first. (Backward
    graphs are compiled when backward first runs, outside this call: a failure there is raised.)"""
    compiled_call = block._compiled_call_impl

    def call(*args, **kwargs):
        cache = kwargs.get("cache")
        before = cache.snapshot() if cache is not None else None
        try:
            return compiled_call(*args, **kwargs)
        except COMPILE_ERRORS as e:
            notice_once(e)
            for b in blocks:
                b._compiled_call_impl = None
            if cache is not None:
                cache.restore(before)
            return block._call_impl(*args, **kwargs)

    return call


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
