"""What attention must guarantee: no look into the future, pads change nothing, the KV cache is exact."""

import pytest
import torch

from conftest import run, tiny_model
from minilm.model.attention import KVCache

POSITIONS = ["learned", "sinusoidal", "rope"]
IMPLS = ["math", "sdpa"]
V = 53


@pytest.mark.parametrize("pos", POSITIONS)
@pytest.mark.parametrize("impl", IMPLS)
def test_decoder_is_causal(pos, impl):
    model = tiny_model("decoder", pos=pos, attn_impl=impl)
    a = torch.randint(0, V, (2, 12))
    for t in (0, 5, 10):
        b = a.clone()
        b[:, t + 1 :] = torch.randint(0, V, (2, 11 - t))  # change everything after position t
        ya, yb = model(a), model(b)
        torch.testing.assert_close(ya[:, : t + 1], yb[:, : t + 1], atol=1e-6, rtol=0)
        assert not torch.allclose(ya[:, t + 1 :], yb[:, t + 1 :])


@pytest.mark.parametrize("impl", IMPLS)
def test_encoder_decoder_decoder_side_is_causal(impl):
    model = tiny_model("encoder-decoder", attn_impl=impl)
    src = torch.randint(0, V, (2, 9))
    a = torch.randint(0, V, (2, 8))
    b = a.clone()
    b[:, 4:] = torch.randint(0, V, (2, 4))
    torch.testing.assert_close(model(src, a)[:, :4], model(src, b)[:, :4], atol=1e-6, rtol=0)


def test_encoder_is_bidirectional():
    """The contrast that shows the causal test can fail: a later token does change the encoder's outputs."""
    model = tiny_model("encoder")
    a = torch.randint(0, V, (1, 10))
    b = a.clone()
    b[0, 9] = (a[0, 9] + 1) % V
    assert not torch.allclose(model(a)[:, :9], model(b)[:, :9])


@pytest.mark.parametrize("arch", ["encoder", "decoder", "encoder-decoder"])
@pytest.mark.parametrize("pos", POSITIONS)
@pytest.mark.parametrize("impl", IMPLS)
def test_right_padding_changes_nothing(arch, pos, impl):
    model = tiny_model(arch, pos=pos, attn_impl=impl)
    lengths = [6, 9, 4]
    rows = [torch.randint(1, V, (n,)) for n in lengths]
    T = max(lengths)
    ids = torch.randint(0, V, (3, T))  # random pad ids: they must not matter either
    mask = torch.zeros(3, T, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    batched = run(model, ids, mask, ids, mask) if arch == "encoder-decoder" else run(model, ids, mask)
    for i, r in enumerate(rows):
        alone = run(model, r[None], None, r[None]) if arch == "encoder-decoder" else run(model, r[None])
        torch.testing.assert_close(batched[i, : len(r)], alone[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pos", POSITIONS)
def test_decoder_left_padding_with_positions_changes_nothing(pos):
    model = tiny_model("decoder", pos=pos)
    r = torch.randint(1, V, (5,))
    ids = torch.cat([torch.zeros(3, dtype=torch.long), r])[None]
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1]])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    torch.testing.assert_close(model(ids, mask, positions)[0, 3:], model(r[None])[0], atol=1e-5, rtol=1e-5)


def test_source_padding_does_not_change_encoder_decoder_outputs():
    model = tiny_model("encoder-decoder")
    src, tgt = torch.randint(1, V, (1, 6)), torch.randint(1, V, (1, 5))
    padded = torch.cat([src, torch.randint(0, V, (1, 3))], dim=1)
    mask = torch.tensor([[1] * 6 + [0] * 3])
    torch.testing.assert_close(model(padded, tgt, mask), model(src, tgt), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pos", POSITIONS)
@pytest.mark.parametrize("impl", IMPLS)
def test_decoder_kv_cache_equals_full_recompute(pos, impl):
    model = tiny_model("decoder", pos=pos, attn_impl=impl)
    ids = torch.randint(0, V, (2, 11))
    full = model(ids)
    cache = KVCache()
    steps = [model(ids[:, :4], cache=cache)]  # prefill 4 positions, then one at a time
    for t in range(4, 11):
        steps.append(model(ids[:, t : t + 1], cache=cache))
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.length == 11


def test_decoder_kv_cache_with_left_padding():
    model = tiny_model("decoder", pos="rope")
    ids = torch.randint(1, V, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, :3] = 0  # row 1 is left-padded
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    full = model(ids, mask, positions)
    cache = KVCache()
    steps = [model(ids[:, :5], mask[:, :5], positions[:, :5], cache=cache)]
    for t in range(5, 9):
        steps.append(model(ids[:, t : t + 1], mask[:, : t + 1], positions[:, t : t + 1], cache=cache))
    out = torch.cat(steps, dim=1)
    torch.testing.assert_close(out[0], full[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1, 3:], full[1, 3:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_encoder_decoder_kv_cache_equals_full_recompute(impl):
    model = tiny_model("encoder-decoder", attn_impl=impl, n_decoder_layer=3)
    src = torch.randint(1, V, (2, 8))
    src_mask = torch.ones(2, 8, dtype=torch.long)
    src_mask[0, 6:] = 0
    tgt = torch.randint(0, V, (2, 7))
    full = model(src, tgt, src_mask)
    memory = model.encode(src, src_mask)
    cache = KVCache()
    steps = [model.decode(tgt[:, t : t + 1], memory, src_mask, cache=cache) for t in range(7)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    assert len(cache.cross_kv) == 3  # cross-attention keys and values computed once per layer


# -- a [CLS]-pooled head: the last block computes [CLS] alone ----------------------------------------------
def full_logits(model, ids, mask, segments=None):
    """The head on every position's last hidden state: the path without `keep`."""
    return model.head_logits(model.hidden(ids, mask, segments), mask)


@pytest.mark.parametrize("changes", [
    dict(pos="learned"), dict(pos="rope", attn_impl="sdpa"), dict(pos="alibi"), dict(norm_position="post"),
    dict(parallel_block=True), dict(share_layers=True), dict(n_kv_head=2, qk_norm=True),
], ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("head", ["cls", "regression"])
def test_cls_pooled_head_computes_the_last_block_at_cls_alone(changes, head):
    """forward() of a [CLS]-pooled head runs the last block at position 0 only; its logits and every
    gradient equal those of the head on the full last hidden states, padding and segments included."""
    models = [tiny_model("encoder", head=head, n_labels=3, pooling="cls", **changes).train() for _ in range(2)]
    assert models[0].reads_cls_only
    ids = torch.randint(1, V, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, 7:], mask[2, 3:] = 0, 0
    segments = (torch.arange(11) >= 5).long().expand(3, 11)
    fast, full = models[0](ids, mask, segments), full_logits(models[1], ids, mask, segments)
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)
    fast.square().sum().backward()
    full.square().sum().backward()
    for (name, a), b in zip(models[0].named_parameters(), models[1].parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-5, msg=name)
    h = models[0].hidden(ids, mask, segments, keep=1)  # (B, 1, C)
    assert h.shape == (3, 1, 32)


def test_cls_pooled_head_with_gradient_checkpointing():
    fast, full = (tiny_model("encoder", head="cls", n_labels=3, pooling="cls").train() for _ in range(2))
    fast.transformer.grad_checkpointing = True
    ids = torch.randint(1, V, (2, 9))
    fast(ids).sum().backward()
    full_logits(full, ids, None).sum().backward()
    for a, b in zip(fast.parameters(), full.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("head, changes", [("cls", dict(pooling="mean")), ("cls", dict(pooling="cls", pair_encoding="bi")),
                                           ("cls", dict(pooling="cls", mlp="moe")), ("token", dict(pooling="cls")),
                                           ("mlm", dict(pooling="cls"))])
def test_heads_that_read_more_than_cls_get_every_position(head, changes):
    model = tiny_model("encoder", head=head, n_labels=3, **changes)
    assert not model.reads_cls_only


def test_a_causal_stack_refuses_keep():
    model = tiny_model("decoder")
    with pytest.raises(ValueError, match="only a bidirectional stack"):
        model.transformer(torch.randint(1, V, (1, 5)), keep=1)
