"""kernels/: every fused op equals its eager reference, forward and backward (float64 gradcheck
for the hand-written backward)."""

import importlib

import pytest
import torch

from kernels.attention import compiled_math_attention, math_attention, sdpa_attention
from kernels.cross_entropy import chunked_cross_entropy, reference_cross_entropy
from kernels.packed_linear import available as onednn_available
from kernels.packed_linear import packed_linear, packed_linears
import kernels.packed_linear as packed_linear_module
from minilm.model.attention import KVCache
from kernels.pointwise import bias_gelu, reference_bias_gelu, reference_residual_layer_norm, residual_layer_norm
from minilm.inference.generate import generate
from minilm.model.attention import attention_bias
from minilm.objectives import IGNORE_INDEX

TOL = dict(atol=1e-5, rtol=1e-4)


def leaves(*shapes, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=dtype).requires_grad_() for s in shapes]


def grads_of(fn, inputs):
    out = fn(*inputs)
    outs = out if isinstance(out, tuple) else (out,)
    loss = sum((o * torch.linspace(-1, 1, o.numel()).view(o.shape)).sum() for o in outs)  # weights all outputs differently
    return outs, torch.autograd.grad(loss, [x for x in inputs if isinstance(x, torch.Tensor) and x.requires_grad])


def assert_same(fn_a, fn_b, inputs, **tol):
    (outs_a, grads_a), (outs_b, grads_b) = grads_of(fn_a, inputs), grads_of(fn_b, inputs)
    for a, b in [*zip(outs_a, outs_b), *zip(grads_a, grads_b)]:
        torch.testing.assert_close(a, b, **(tol or TOL))


# -- cross-entropy in chunks --------------------------------------------------------------------------------
@pytest.mark.parametrize("bias, chunk", [(True, 7), (False, 64), (True, 1000)])
def test_chunked_cross_entropy_equals_the_full_logits(bias, chunk):
    h, w = leaves((50, 24), (97, 24))
    b = leaves((97,), seed=1)[0] if bias else None
    labels = torch.randint(0, 97, (50,), generator=torch.Generator().manual_seed(2))
    labels[::5] = IGNORE_INDEX
    inputs = [h, w, b, labels]
    assert_same(reference_cross_entropy, lambda *a: chunked_cross_entropy(*a, chunk=chunk), inputs)


def test_a_decoder_with_loss_impl_chunked_trains_as_with_full_logits():
    from conftest import tiny_model

    ids = torch.randint(1, 50, (3, 9), generator=torch.Generator().manual_seed(3))
    labels = ids.roll(-1, dims=1)
    labels[0, -4:] = IGNORE_INDEX
    results = []
    for impl in ("logits", "chunked"):
        model = tiny_model("decoder", pos="learned", loss_impl=impl).train()
        assert model.lm_head.loss_impl == impl
        loss, n = model.lm_loss(ids, labels)
        loss.backward()
        results.append((loss, n, {k: p.grad for k, p in model.named_parameters()}))
    (a, n_a, g_a), (b, n_b, g_b) = results
    assert n_a == n_b == 23
    torch.testing.assert_close(b, a, **TOL)
    for k in g_a:
        torch.testing.assert_close(g_b[k], g_a[k], **TOL)


def test_chunked_cross_entropy_gradcheck_float64():
    h, w, b = leaves((9, 5), (11, 5), (11,), dtype=torch.float64)
    labels = torch.tensor([0, 3, IGNORE_INDEX, 10, 4, 4, IGNORE_INDEX, 1, 2])
    assert torch.autograd.gradcheck(lambda h, w, b: chunked_cross_entropy(h, w, b, labels, chunk=4), (h, w, b))


def test_chunked_cross_entropy_in_bf16_tracks_fp32():
    h, w = leaves((64, 32), (300, 32))
    labels = torch.randint(0, 300, (64,), generator=torch.Generator().manual_seed(3))
    full = reference_cross_entropy(h, w, None, labels)
    half = chunked_cross_entropy(h.bfloat16(), w.bfloat16(), None, labels, chunk=16)
    assert half.dtype == torch.float32 and abs(half.item() - full.item()) / full.item() < 1e-2


def test_chunked_cross_entropy_rejects_bad_shapes():
    h, w = leaves((4, 3), (5, 3))
    with pytest.raises(ValueError, match=r"expected h \(N, C\) and labels \(N,\)"):
        chunked_cross_entropy(h, w, None, torch.zeros(3, dtype=torch.long))


# -- compiled element-wise chains -----------------------------------------------------------------------------
def test_bias_gelu_compiled_equals_reference():
    assert_same(reference_bias_gelu, bias_gelu, leaves((2, 5, 16), (16,)))


def test_residual_layer_norm_compiled_equals_reference():
    x, r, gamma, beta = leaves((2, 5, 16), (2, 5, 16), (16,), (16,))
    assert_same(reference_residual_layer_norm, residual_layer_norm, [x, r, gamma, beta])


# -- attention ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_and_compiled_math_attention_equal_the_math_path(causal):
    q, k, v = leaves((2, 3, 6, 8), (2, 3, 6, 8), (2, 3, 6, 8))
    key_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    bias = attention_bias(key_mask, 6, 6, causal, torch.float32, "cpu")
    reference = lambda q, k, v: math_attention(q, k, v, bias, 0.0, False)  # noqa: E731
    assert_same(reference, lambda q, k, v: sdpa_attention(q, k, v, bias, 0.0, False), [q, k, v])
    assert_same(reference, lambda q, k, v: compiled_math_attention(q, k, v, bias, 0.0, False), [q, k, v])


# -- Linear weights prepacked for oneDNN (decoding) ---------------------------------------------------------------
needs_onednn = pytest.mark.skipif(not onednn_available(), reason="this torch is built without oneDNN (mkldnn)")


@needs_onednn
@pytest.mark.parametrize("rows", [(1, 24), (8, 24), (2, 3, 24)])
@pytest.mark.parametrize("bias", [True, False])
def test_packed_linear_equals_f_linear(rows, bias):
    g = torch.Generator().manual_seed(0)
    w, x = torch.randn(40, 24, generator=g), torch.randn(rows, generator=g)
    b = torch.randn(40, generator=g) if bias else None
    torch.testing.assert_close(packed_linear(w, b)(x), torch.nn.functional.linear(x, w, b), **TOL)


@needs_onednn
def test_packed_linears_only_inside_the_block_and_only_without_autograd(monkeypatch):
    from conftest import tiny_model

    monkeypatch.setattr(packed_linear_module, "MIN_PACKED", 0)  # the tiny model's matrices are below the size limit
    model = tiny_model("decoder", pos="learned").eval()
    ids = torch.randint(1, 50, (2, 7), generator=torch.Generator().manual_seed(1))
    reference = model(ids)
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)] + [model.lm_head]
    with torch.inference_mode():
        with packed_linears(model):
            assert all("forward" in m.__dict__ for m in layers)  # every Linear and the LM head swapped
            torch.testing.assert_close(model(ids), reference, **TOL)
            with packed_linears(model):  # nested: the outer block's packing stays
                pass
            assert all("forward" in m.__dict__ for m in layers)
        assert not any("forward" in m.__dict__ for m in layers)  # the class's forward again
    with packed_linears(model):  # autograd recording: the packed op has no backward, so nothing changes
        assert not any("forward" in m.__dict__ for m in layers)
        model(ids).sum().backward()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16), packed_linears(model):  # autocast: no packing
        assert not any("forward" in m.__dict__ for m in layers)
        generate(model, ids, max_new_tokens=3, greedy=True)  # as evaluation decodes under --dtype bf16
    packed_tokens = generate(model, ids, max_new_tokens=12, greedy=True)  # decoding packs the layers itself
    monkeypatch.setattr(packed_linear_module, "MIN_PACKED", 1 << 62)
    assert torch.equal(packed_tokens, generate(model, ids, max_new_tokens=12, greedy=True))



@needs_onednn
def test_decoding_with_compiled_blocks_leaves_their_layers_to_the_compiler(monkeypatch):
    """infer.py --compile: the blocks are compiled, so decoding packs only the layers outside them
    (the LM head); packing inside a compiled block would hand the compiler an op it cannot lower."""
    from conftest import tiny_model
    from kernels.compile import compile_blocks

    monkeypatch.setattr(packed_linear_module, "MIN_PACKED", 0)
    eager = tiny_model("decoder", pos="learned").eval()
    model = compile_blocks(tiny_model("decoder", pos="learned").eval())
    model.load_state_dict(eager.state_dict())
    with torch.inference_mode(), packed_linears(model):
        assert "forward" in model.lm_head.__dict__
        assert not any("forward" in m.__dict__ for m in model.modules() if isinstance(m, torch.nn.Linear))
    ids = torch.randint(1, 50, (2, 7), generator=torch.Generator().manual_seed(1))
    assert torch.equal(generate(model, ids, max_new_tokens=6, greedy=True), generate(eager, ids, max_new_tokens=6, greedy=True))

# -- the Adam(W) update as one compiled loop ----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_compiled_adam_update_equals_the_readable_one_and_torch_optim(name):
    from conftest import tiny_model
    from minilm.optim import OPTIMIZERS, param_groups

    models = {k: tiny_model("decoder", pos="learned") for k in ("readable", "compiled", "torch")}
    hp = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-8)
    opts = {
        "readable": OPTIMIZERS[name](param_groups(models["readable"], 0.1), **hp, foreach=False),
        "compiled": OPTIMIZERS[name](param_groups(models["compiled"], 0.1), **hp, foreach="compiled"),
        "torch": {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name](param_groups(models["torch"], 0.1), **hp, foreach=False),
    }
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        grads = [torch.randn(p.shape, generator=g) for p in models["readable"].parameters()]
        for k, model in models.items():
            for p, grad in zip(model.parameters(), grads):
                p.grad = grad.clone()
            opts[k].step()
    for k in ("compiled", "torch"):
        for (n, a), b in zip(models["readable"].named_parameters(), models[k].parameters()):
            torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5, msg=f"{k} {n}")
    assert any((p != q).any() for p, q in zip(models["compiled"].parameters(), tiny_model("decoder", pos="learned").parameters()))


# -- --compile: one graph for batches of every length ------------------------------------------------------------
def test_compiled_blocks_do_not_recompile_for_new_sequence_lengths():
    """compile_blocks compiles with dynamic shapes: fine-tuning batches padded to different lengths
    share the graphs of the first batch (no bucketing of lengths needed), and still equal the eager
    blocks. The [CLS]-pooled head's last block, which computes [CLS] alone, has a graph of its own."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from conftest import tiny_model
    from kernels.compile import compile_blocks

    torch._dynamo.reset()
    counters.clear()
    eager = tiny_model("encoder", head="cls", n_labels=3).train()
    compiled = compile_blocks(tiny_model("encoder", head="cls", n_labels=3).train())
    g = torch.Generator().manual_seed(0)
    assert eager.reads_cls_only
    for T in (13, 29, 40, 8):
        ids = torch.randint(1, 50, (4, T), generator=g)
        mask = torch.ones_like(ids)
        mask[0, T // 2 :] = 0
        torch.testing.assert_close(compiled(ids, mask), eager(ids, mask), **TOL)
        assert counters["stats"]["unique_graphs"] == 2, f"recompiled at length {T}"  # the blocks' graph, the last block's



def test_compiled_blocks_decode_as_the_eager_model(capsys):
    """infer.py --compile on an encoder-decoder, greedy and beams: the KV cache's in-place writes
    stay outside the compiled graphs (inductor failed on them), and the tokens equal eager ones."""
    from conftest import tiny_model
    from kernels.compile import compile_blocks
    from minilm.inference.beam import beam_search

    config = dict(dropout=0.1, attn_dropout=0.1, n_head=2, n_embd=64)  # as a trained checkpoint holds (eval mode)
    eager = tiny_model("encoder-decoder", **config).eval()
    model = compile_blocks(tiny_model("encoder-decoder", **config).eval())
    model.load_state_dict(eager.state_dict())
    ids = torch.randint(3, 50, (1, 7), generator=torch.Generator().manual_seed(1))
    mask, ends = torch.ones_like(ids), dict(eos_id=2, pad_id=0, decoder_start_id=1)
    with torch.no_grad():
        assert torch.equal(generate(model, ids, mask, 6, greedy=True, **ends), generate(eager, ids, mask, 6, greedy=True, **ends))
        assert torch.equal(beam_search(model, ids, mask, 6, 3, 1.0, **ends), beam_search(eager, ids, mask, 6, 3, 1.0, **ends))
    blocks = [b for m in model.modules() if hasattr(m, "blocks") for b in m.blocks]
    assert all(b._compiled_call_impl is not None for b in blocks)  # compiled still: nothing fell back to eager
    assert "notice" not in capsys.readouterr().out

# -- where torch.compile cannot run ------------------------------------------------------------------------------
def compiler_failure(message):
    """What torch.compile raises when inductor fails (a missing C++ compiler, say)."""
    from torch._dynamo.exc import BackendCompilerFailed

    return BackendCompilerFailed(lambda *args: None, RuntimeError(message), None)

def test_fused_ops_fall_back_to_their_reference_with_one_notice(monkeypatch, capsys):
    import kernels.compile as kc
    from kernels.compile import fused

    def broken_compile(fn, **kwargs):
        def run(*args, **kw):
            raise compiler_failure("no C++ compiler on this machine")
        return run

    monkeypatch.setattr(kc.torch, "compile", broken_compile)
    monkeypatch.setattr(kc, "_warned", False)
    op = fused(reference_bias_gelu)
    x, b = leaves((2, 3, 4), (4,))
    for _ in range(3):
        torch.testing.assert_close(op(x, b), reference_bias_gelu(x, b))
    out = capsys.readouterr().out
    assert out.count("notice: torch.compile is unavailable here") == 1 and "running eager" in out


def test_compiled_blocks_fall_back_to_eager_at_their_first_call_with_one_notice(monkeypatch, capsys):
    import kernels.compile as kc
    from conftest import tiny_model

    def broken_compile(fn, **kwargs):
        def run(*args, **kw):
            raise compiler_failure("inductor failed on this graph")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    monkeypatch.setattr(kc, "_warned", False)
    eager = tiny_model("decoder")
    model = kc.compile_blocks(tiny_model("decoder"))
    ids = torch.randint(3, 50, (2, 7), generator=torch.Generator().manual_seed(1))
    for _ in range(2):
        torch.testing.assert_close(model(ids), eager(ids))
    assert all(b._compiled_call_impl is None for b in model.transformer.blocks)  # every block eager again
    out = capsys.readouterr().out
    assert out.count("notice: torch.compile is unavailable here") == 1 and "inductor failed" in out
    triton_missing = getattr(importlib.import_module("torch._inductor.exc"), "TritonMissing", None)
    assert triton_missing is None or issubclass(triton_missing, kc.COMPILE_ERRORS)  # --compile on a GPU without Triton: eager


def test_a_compiled_block_failing_after_a_cache_write_falls_back_with_the_cache_as_it_was(monkeypatch):
    """KVCache.append runs between two compiled graphs: when the second one fails to compile, the
    first has already appended, and the eager retry must not append a second time."""
    import kernels.compile as kc
    from conftest import tiny_model

    def compile_failing_after_an_append(fn, **kwargs):
        def run(*args, **kw):
            k = torch.zeros(args[0].shape[0], 4, args[0].shape[1], 8)  # (B, nh, T, hs): what the first graph would append
            kw["cache"].append(0, k, k)
            raise compiler_failure("inductor failed after the graph break")
        return run

    monkeypatch.setattr(torch, "compile", compile_failing_after_an_append)
    monkeypatch.setattr(kc, "_warned", True)
    eager = tiny_model("decoder", pos="learned")
    model = kc.compile_blocks(tiny_model("decoder", pos="learned"))
    ids = torch.randint(3, 50, (2, 7), generator=torch.Generator().manual_seed(1))
    cache, eager_cache = KVCache(capacity=12), KVCache(capacity=12)
    with torch.no_grad():
        torch.testing.assert_close(model(ids, cache=cache), eager(ids, cache=eager_cache), **TOL)
        assert [k.shape[2] for k, _ in cache.self_kv.values()] == [7, 7]  # the prompt's 7 positions once per layer
        torch.testing.assert_close(model(ids[:, :1], cache=cache), eager(ids[:, :1], cache=eager_cache), **TOL)
