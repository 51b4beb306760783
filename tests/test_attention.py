"""The readable attention and the SDPA path compute the same function, forward and backward."""

import pytest
import torch

from conftest import tiny_config
from minilm.model.attention import KVCache, attention_bias, math_attention, sdpa_attention
from minilm.model.families import build_model

V = 53


def twin_models(arch, **changes):
    torch.manual_seed(0)
    math_model = build_model(tiny_config(arch, attn_impl="math", **changes))
    sdpa_model = build_model(tiny_config(arch, attn_impl="sdpa", **changes))
    sdpa_model.load_state_dict(math_model.state_dict())
    return math_model, sdpa_model


def forward_backward(model, inputs):
    model.zero_grad()
    out = model(*inputs)
    (out.float() * torch.linspace(-1, 1, out.shape[-1])).sum().backward()  # a loss that touches every output
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def padded(B, T, lengths):
    mask = torch.zeros(B, T, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    return mask


CASES = {
    "encoder+padding": ("encoder", lambda: (torch.randint(0, V, (3, 10)), padded(3, 10, [10, 6, 3]))),
    "encoder+segments": ("encoder", lambda: (torch.randint(0, V, (2, 9)), None, torch.randint(0, 2, (2, 9)))),
    "decoder": ("decoder", lambda: (torch.randint(0, V, (3, 12)),)),
    "decoder+padding": ("decoder", lambda: (torch.randint(0, V, (3, 12)), padded(3, 12, [12, 7, 2]))),
    "encoder-decoder+cross": (
        "encoder-decoder",
        lambda: (torch.randint(0, V, (3, 10)), torch.randint(0, V, (3, 6)), padded(3, 10, [10, 4, 8]), padded(3, 6, [6, 6, 2])),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_math_and_sdpa_agree_forward_and_backward(case, pos):
    arch, make_inputs = CASES[case]
    math_model, sdpa_model = twin_models(arch, pos=pos)
    torch.manual_seed(1)
    inputs = make_inputs()
    y_math, g_math = forward_backward(math_model, inputs)
    y_sdpa, g_sdpa = forward_backward(sdpa_model, inputs)
    if len(inputs) > 1 and inputs[1] is not None and arch != "encoder-decoder":
        keep = inputs[1].bool()  # outputs at padded query positions are unused; compare real ones
        y_math, y_sdpa = y_math[keep], y_sdpa[keep]
    torch.testing.assert_close(y_sdpa, y_math, atol=1e-5, rtol=0)
    assert g_math.keys() == g_sdpa.keys() and len(g_math) > 10
    for name in g_math:
        # within 1e-5 of the gradient's own scale (the loss sums every output, so gradients reach ~100)
        scale = max(1.0, g_math[name].abs().max().item())
        assert (g_sdpa[name] - g_math[name]).abs().max().item() <= 1e-5 * scale, name


def test_math_and_sdpa_agree_with_kv_cache():
    math_model, sdpa_model = twin_models("decoder", pos="rope")
    ids = torch.randint(0, V, (2, 9))
    outs = []
    for model in (math_model, sdpa_model):
        cache = KVCache()
        steps = [model(ids[:, :3], cache=cache)] + [model(ids[:, t : t + 1], cache=cache) for t in range(3, 9)]
        outs.append(torch.cat(steps, dim=1))
    torch.testing.assert_close(outs[1], outs[0], atol=1e-5, rtol=1e-5)


def test_kv_cache_with_a_capacity_equals_the_growing_cache():
    g = torch.Generator().manual_seed(0)
    chunks = [torch.randn(3, 2, t, 4, generator=g) for t in (2, 1, 1, 3, 1)]  # (B, nh, T, hs): a prompt, steps, a burst
    grown, reserved = KVCache(), KVCache(capacity=6)  # 8 positions in all: the last two overflow the buffer
    grown.self_kv[0] = reserved.self_kv[0] = (chunks[0], -chunks[0])  # set before the first append, as a prefix is
    for i, c in enumerate(chunks[1:]):
        if i == 2:  # beam search keeps and repeats rows
            index = torch.tensor([2, 0, 0])
            grown.reorder(index)
            reserved.reorder(index)
        a, b = grown.append(0, c, -c), reserved.append(0, c, -c)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and grown.length == reserved.length
    assert reserved.length == 8 and 0 not in reserved.buffers  # past its capacity it grew by concatenation


def test_attention_functions_agree_on_random_masks():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8, dtype=torch.float64) for _ in range(3))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    bias = attention_bias(mask, 5, 5, True, torch.float64, q.device)
    ref = math_attention(q, k, v, bias, 0.0, False)
    torch.testing.assert_close(sdpa_attention(q, k, v, bias, 0.0, False), ref)
    torch.testing.assert_close(sdpa_attention(q, k, v, None, 0.0, False, is_causal=True), math_attention(q, k, v, attention_bias(None, 5, 5, True, torch.float64, q.device), 0.0, False))


def test_attention_bias_blocks_future_and_padding():
    bias = attention_bias(torch.tensor([[1, 1, 0]]), 3, 3, True, torch.float32, "cpu")[0, 0]
    allowed = bias == 0
    assert allowed.tolist() == [[True, False, False], [True, True, False], [True, True, False]]
    # with 2 cached positions, the single new query sees all 3 keys: no bias at all without padding
    assert attention_bias(None, 1, 3, True, torch.float32, "cpu") is None
    assert (attention_bias(torch.tensor([[1, 1, 1]]), 1, 3, True, torch.float32, "cpu") == 0).all()


def test_fused_norms_and_activations_equal_their_written_out_equations():
    from minilm.model.mlp import gelu, gelu_reference, gelu_tanh, gelu_tanh_reference
    from minilm.model.norms import LayerNorm, RMSNorm, layer_norm_reference, rms_norm_reference

    torch.manual_seed(0)
    x = torch.randn(3, 5, 16, dtype=torch.float64, requires_grad=True)
    ln, rms = LayerNorm(16).double(), RMSNorm(16).double()
    with torch.no_grad():
        for p in (*ln.parameters(), *rms.parameters()):
            p.add_(torch.randn_like(p))
    pairs = [
        (gelu, gelu_reference), (gelu_tanh, gelu_tanh_reference),
        (ln, lambda t: layer_norm_reference(t, ln.weight, ln.bias, ln.eps)),
        (rms, lambda t: rms_norm_reference(t, rms.weight, rms.eps)),
    ]
    for fused, reference in pairs:
        torch.testing.assert_close(fused(x), reference(x))
        g_fused = torch.autograd.grad(fused(x).pow(2).sum(), x)[0]
        g_ref = torch.autograd.grad(reference(x).pow(2).sum(), x)[0]
        torch.testing.assert_close(g_fused, g_ref)
        assert torch.autograd.gradcheck(reference, (x,))
