"""torch.autograd.gradcheck over the hand-written pieces: the analytic gradients that autograd
derives through minilm's own code equal finite differences, in float64 at tiny sizes.

Covered: attention (the written-out math path, with padding and causal masks, cross-attention,
rotary positions, and the whole multi-head module), the norms (reference equations and modules),
the embeddings (learned, sinusoidal, segments, scaling, offset positions, rotary), and the losses
(cross_entropy_sum with ignored targets, and the MLM loss through the MLM head).
"""

import pytest
import torch
from torch.autograd import gradcheck
from torch.func import functional_call

from conftest import tiny_config
from minilm.model.attention import MultiHeadAttention, attention_bias, math_attention
from minilm.model.embeddings import Embeddings, Rotary, apply_rotary
from minilm.model.heads import MLMHead
from minilm.model.norms import LayerNorm, RMSNorm, layer_norm_reference, rms_norm_reference
from minilm.objectives import IGNORE_INDEX, cross_entropy_sum

F64 = torch.float64


def rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=F64).requires_grad_()


class Call(torch.nn.Module):
    """`call(module, *inputs)` as a module, so that functional_call can swap its parameters."""

    def __init__(self, module, call):
        super().__init__()
        self.module, self.call = module, call

    def forward(self, *inputs):
        return self.call(self.module, *inputs)


def check_module(module, inputs=(), call=lambda m, *xs: m(*xs)):
    """gradcheck of `call(module, *inputs)` with respect to every parameter of `module`, moved away
    from its trivial init values (gains 1, biases 0), and to the float tensors `inputs`."""
    wrapped = Call(module.double(), call)
    names = [n for n, _ in wrapped.named_parameters()]
    params = []
    for n, p in wrapped.named_parameters():
        g = torch.Generator().manual_seed(len(params))
        params.append((p.detach() + 0.3 * torch.randn(p.shape, generator=g, dtype=F64)).requires_grad_())

    def f(*tensors):
        return functional_call(wrapped, dict(zip(names, tensors[: len(names)])), tensors[len(names) :])

    assert gradcheck(f, (*params, *inputs), eps=1e-6, atol=1e-6)


# -- attention -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "mask, causal, T, S",
    [
        (None, False, 4, 4),  # no mask at all
        ([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], False, 5, 5),  # padding keys
        ([[1, 1, 1, 1, 0], [0, 0, 1, 1, 1]], True, 5, 5),  # causal with right and left padding
        (None, True, 2, 5),  # two new queries after three cached positions
        ([[1, 1, 0], [1, 1, 1]], False, 4, 3),  # cross-attention: T queries over S memory positions
    ],
)
def test_math_attention(mask, causal, T, S):
    q, k, v = rand(2, 3, T, 4, seed=1), rand(2, 3, S, 4, seed=2), rand(2, 3, S, 4, seed=3)
    bias = attention_bias(torch.tensor(mask) if mask else None, T, S, causal, F64, "cpu")
    # A query that may look at no key at all (a left pad under the causal mask) gets a finite output
    # that nothing uses: the finfo.min bias swallows its scores, so only finite differences see it
    # as constant. Its gradient is not checked; every other query's is.
    sees = (bias == 0).any(-1) if bias is not None else torch.ones(1, 1, T, dtype=torch.bool)  # (B or 1, 1, T)
    keep = sees.expand(2, 3, T)
    assert keep.all() or (causal and mask[1][0] == 0)  # only a left pad under the causal mask sees nothing
    assert gradcheck(lambda q, k, v: math_attention(q, k, v, bias, 0.0, False)[keep], (q, k, v), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("cross", [False, True])
def test_multi_head_attention_module(cross):
    config = tiny_config("encoder", n_embd=8, n_head=2, attn_impl="math", pos="rope")
    attn = MultiHeadAttention(config, causal=not cross, cross=cross).eval()
    x = rand(2, 3, 8, seed=4)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]) if cross else torch.tensor([[1, 1, 0], [1, 1, 1]])
    S = 4 if cross else 3
    bias = attention_bias(mask, 3, S, not cross, F64, "cpu")
    if cross:
        check_module(attn, (x, rand(2, 4, 8, seed=5)), lambda m, x, memory: m(x, bias, memory=memory))
    else:
        rope = Rotary(config.head_size).angles(torch.arange(3))
        check_module(attn, (x,), lambda m, x: m(x, bias, rope=rope))


def test_apply_rotary():
    cos, sin = Rotary(6, theta=100.0).angles(torch.tensor([[0, 1, 2, 7], [3, 4, 5, 6]]))
    x = rand(2, 2, 4, 6, seed=6)
    assert gradcheck(lambda x: apply_rotary(x, cos, sin), (x,), eps=1e-6, atol=1e-6)


# -- norms ---------------------------------------------------------------------------------------------------
def test_norm_references():
    x, w, b = rand(3, 4, 6, seed=7), rand(6, seed=8), rand(6, seed=9)
    assert gradcheck(lambda x, w, b: layer_norm_reference(x, w, b, 1e-5), (x, w, b), eps=1e-6, atol=1e-6)
    assert gradcheck(lambda x, w: layer_norm_reference(x, w, None, 1e-12), (x, w), eps=1e-6, atol=1e-6)
    assert gradcheck(lambda x, w: rms_norm_reference(x, w, 1e-5), (x, w), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("norm", [LayerNorm(6), LayerNorm(6, eps=1e-12, bias=False), RMSNorm(6)])
def test_norm_modules(norm):
    check_module(norm, (rand(3, 4, 6, seed=10),))


# -- embeddings --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "changes",
    [
        dict(pos="learned", n_segment=2, embed_norm=True),  # BERT
        dict(pos="learned", pos_offset=2, scale_embedding=True, embed_norm=True),  # BART
        dict(pos="sinusoidal", norm="rmsnorm", embed_norm=True),
        dict(pos="rope"),  # nothing added: the rotation happens in attention
    ],
)
def test_embeddings(changes):
    config = tiny_config("encoder", vocab_size=7, n_embd=4, n_head=2, max_seq_len=6, **{"n_segment": 0, **changes})
    embed = Embeddings(config).eval()
    ids = torch.tensor([[1, 2, 3, 0], [6, 5, 4, 4]])
    segments = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]]) if config.n_segment else None
    check_module(embed, (), lambda m: m(ids, torch.arange(4), segments))


# -- losses ----------------------------------------------------------------------------------------------------
def test_cross_entropy_sum_with_ignored_targets():
    logits = rand(2, 3, 5, seed=11)
    labels = torch.tensor([[1, IGNORE_INDEX, 4], [0, 2, IGNORE_INDEX]])
    assert cross_entropy_sum(logits, labels)[0].dtype == F64  # float64 is kept, not rounded to float32
    assert gradcheck(lambda z: cross_entropy_sum(z, labels)[0], (logits,), eps=1e-6, atol=1e-6)


def test_mlm_loss_through_the_mlm_head():
    """The MLM loss as pretraining computes it: the head at the masked positions only, then the sum
    of cross-entropies (minilm/training/pretraining.py); gradients reach the hidden states and every head weight."""
    config = tiny_config("encoder", head="mlm", vocab_size=9, n_embd=4, n_head=2, norm_eps=1e-12)
    head = MLMHead(config).eval()
    torch.nn.init.normal_(head.decoder.weight, 0.0, 0.5)  # the model's init_weights would; here the head stands alone
    h = rand(2, 5, 4, seed=12)
    labels = torch.full((2, 5), IGNORE_INDEX)
    labels[0, 1], labels[1, 3], labels[1, 4] = 3, 8, 0
    masked = labels != IGNORE_INDEX
    check_module(head, (h,), lambda m, h: cross_entropy_sum(m(h[masked]), labels[masked])[0])
