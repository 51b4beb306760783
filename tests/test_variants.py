"""Variants research uses: grouped-query and multi-query attention (n_kv_head), QK-norm (qk_norm)
parallel attention + MLP blocks (parallel_block), sliding-window attention (attn_window), ALiBi
positions (pos="alibi"), weights shared across layers (share_layers, ALBERT) and a mixture-of-experts
feed-forward (mlp="moe"). Each passes the invariance tests the built-in attention passes (causal, padding,
KV cache equal to full recompute, math equal to SDPA), and each is checked against what it means:
GQA equals multi-head attention with its key/value heads repeated, QK-norm makes the scores
blind to the scale of W^Q and W^K, a parallel block adds both sublayers of one norm."""

import json

import pytest
import torch

from conftest import run, tiny_config, tiny_model
from minilm.checkpoint import from_pretrained, save_pretrained
from minilm.interop import gpt2
from minilm.model.attention import KVCache, attention_bias
from minilm.model.embeddings import alibi_slopes
from minilm.model.families import build_model
from minilm.training.trainer import TrainArgs, Trainer


class LMBatches:
    """Random next-token batches for a decoder."""

    def batch(self, step):
        g = torch.Generator().manual_seed(step)
        ids = torch.randint(0, V, (4, 10), generator=g)
        return {"input_ids": ids, "labels": ids}


def lm_loss(model, batch):
    logits = model(batch["input_ids"][:, :-1])  # (B, T-1, V)
    target = batch["labels"][:, 1:]
    return {"lm": (torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="sum"), target.numel())}


def lm_targets(batch):
    return {"lm": batch["labels"][:, 1:].numel()}

V = 53
VARIANTS = {"gqa": dict(n_kv_head=2), "mqa": dict(n_kv_head=1), "qk_norm": dict(qk_norm=True), "parallel": dict(parallel_block=True), "window": dict(attn_window=3), "alibi": dict(pos="alibi"), "albert": dict(share_layers=True),
            "moe": dict(mlp="moe", moe_experts=4, moe_top_k=2),
            "gqa+qk_norm+rope": dict(n_kv_head=2, qk_norm=True, pos="rope", norm="rmsnorm")}
ONE_STACK = {"parallel"}  # variants of an encoder or a decoder only (no cross-attention)
IMPLS = ["math", "sdpa"]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("impl", IMPLS)
def test_decoder_is_causal(variant, impl):
    model = tiny_model("decoder", attn_impl=impl, **VARIANTS[variant])
    a = torch.randint(0, V, (2, 12))
    b = a.clone()
    b[:, 6:] = torch.randint(0, V, (2, 6))
    ya, yb = model(a), model(b)
    torch.testing.assert_close(ya[:, :6], yb[:, :6], atol=1e-6, rtol=0)
    assert not torch.allclose(ya[:, 6:], yb[:, 6:])


@pytest.mark.parametrize("arch,variant", [(a, v) for a in ("encoder", "decoder", "encoder-decoder") for v in VARIANTS
                                          if not (a == "encoder-decoder" and v in ONE_STACK)])
def test_right_padding_changes_nothing(arch, variant):
    model = tiny_model(arch, **VARIANTS[variant])
    lengths = [6, 9, 4]
    rows = [torch.randint(1, V, (n,)) for n in lengths]
    ids = torch.randint(0, V, (3, max(lengths)))
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = r, 1
    batched = run(model, ids, mask, ids, mask) if arch == "encoder-decoder" else run(model, ids, mask)
    for i, r in enumerate(rows):
        alone = run(model, r[None], None, r[None], None) if arch == "encoder-decoder" else run(model, r[None])
        torch.testing.assert_close(batched[i, : len(r)], alone[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("impl", IMPLS)
def test_kv_cache_equals_full_recompute_and_holds_only_the_kv_heads(variant, impl):
    model = tiny_model("decoder", attn_impl=impl, **VARIANTS[variant])
    ids = torch.randint(0, V, (2, 11))
    full = model(ids)
    cache = KVCache()
    steps = [model(ids[:, :4], cache=cache)]
    for t in range(4, 11):
        steps.append(model(ids[:, t : t + 1], cache=cache))
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    k, v = cache.self_kv[0]
    assert k.shape == v.shape == (2, model.config.kv_heads, 11, model.config.head_size)


@pytest.mark.parametrize("variant", sorted(set(VARIANTS) - ONE_STACK))
def test_encoder_decoder_kv_cache_equals_full_recompute(variant):
    model = tiny_model("encoder-decoder", **VARIANTS[variant])
    src, tgt = torch.randint(1, V, (2, 8)), torch.randint(0, V, (2, 7))
    full = model(src, tgt)
    memory, cache = model.encode(src), KVCache()
    steps = [model.decode(tgt[:, t : t + 1], memory, None, cache=cache) for t in range(7)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_math_equals_sdpa_forward_and_backward(variant):
    math, sdpa = tiny_model("decoder", attn_impl="math", **VARIANTS[variant]), tiny_model("decoder", attn_impl="sdpa", **VARIANTS[variant])
    ids, mask = torch.randint(0, V, (2, 9)), torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0
    for m in (math, sdpa):  # the loss of real positions only: a padded query's output is ignored by design
        (m(ids, mask) * mask[..., None]).square().mean().backward()
    torch.testing.assert_close(math(ids, mask), sdpa(ids, mask), atol=1e-5, rtol=1e-5)
    for (name, p), q in zip(math.named_parameters(), sdpa.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("n_kv_head", [1, 2])
def test_grouped_query_attention_is_multi_head_attention_with_repeated_kv_heads(n_kv_head):
    """A GQA model equals the multi-head model whose W^K and W^V hold each key/value head's
    rows once for every query head of its group (query head i uses key/value head i // group)."""
    gqa = tiny_model("decoder", n_kv_head=n_kv_head)
    mha = build_model(tiny_config("decoder")).eval()
    group, hs = gqa.config.n_head // n_kv_head, gqa.config.head_size
    state = gqa.state_dict()
    for name, t in list(state.items()):
        if name.endswith(("k_proj.weight", "v_proj.weight", "k_proj.bias", "v_proj.bias")):
            heads = t.reshape(n_kv_head, hs, *t.shape[1:])  # (n_kv, hs, C) or (n_kv, hs)
            state[name] = heads.repeat_interleave(group, dim=0).reshape(n_kv_head * group * hs, *t.shape[1:])
    mha.load_state_dict(state)
    ids = torch.randint(0, V, (2, 10))
    torch.testing.assert_close(gqa(ids), mha(ids), atol=1e-6, rtol=1e-6)
    assert gqa.transformer.blocks[0].attn.k_proj.weight.shape == (n_kv_head * hs, gqa.config.n_embd)
    assert sum(p.numel() for p in gqa.parameters()) < sum(p.numel() for p in mha.parameters())


def test_qk_norm_makes_the_scores_blind_to_the_scale_of_queries_and_keys():
    """With QK-norm (RMSNorm, no bias) multiplying W^Q and W^K by 10 changes nothing; without it,
    the attention weights sharpen and the outputs move."""
    ids = torch.randint(0, V, (2, 10))
    for qk_norm, same in ((True, True), (False, False)):
        model = tiny_model("decoder", qk_norm=qk_norm, norm="rmsnorm", bias=False, norm_eps=1e-12)  # eps would break the invariance
        before = model(ids)
        with torch.no_grad():
            for block in model.transformer.blocks:
                block.attn.q_proj.weight.mul_(10)
                block.attn.k_proj.weight.mul_(10)
        assert torch.allclose(model(ids), before, atol=1e-5) == same, qk_norm


def test_a_parallel_block_adds_attention_and_mlp_of_one_norm():
    """x + Attn(LN(x)) + FFN(LN(x)), computed here from the block's own modules."""
    model = tiny_model("decoder", parallel_block=True)
    block = model.transformer.blocks[0]
    assert block.mlp_norm is None
    x = torch.randn(2, 7, model.config.n_embd)
    bias = attention_bias(None, 7, 7, True, x.dtype, x.device)
    h = block.attn_norm(x)
    torch.testing.assert_close(block(x, bias), x + block.attn(h, bias) + block.mlp(h))


@pytest.mark.parametrize("impl", IMPLS)
def test_a_sliding_window_sees_the_last_w_positions_only(impl):
    """One layer, rotary positions (relative), window 4: position i's output is that of its last 4
    tokens run alone, and a change 4 or more positions back changes nothing there; the encoder's
    window reaches both ways."""
    model = tiny_model("decoder", n_layer=1, pos="rope", attn_window=4, attn_impl=impl)
    ids = torch.randint(0, V, (2, 12))
    full = model(ids)
    for i in (3, 7, 11):
        torch.testing.assert_close(full[:, i], model(ids[:, i - 3 : i + 1])[:, -1], atol=1e-5, rtol=1e-5)
    changed = ids.clone()
    changed[:, 3] = (ids[:, 3] + 1) % V
    after = model(changed)
    torch.testing.assert_close(after[:, 7:], full[:, 7:], atol=1e-6, rtol=0)
    assert not torch.allclose(after[:, 4:7], full[:, 4:7])
    encoder = tiny_model("encoder", n_layer=1, pos="rope", attn_window=2, attn_impl=impl)
    a = torch.randint(0, V, (1, 9))
    b = a.clone()
    b[0, 4] = (a[0, 4] + 1) % V
    ya, yb = encoder(a), encoder(b)
    moved = [not torch.allclose(ya[0, j], yb[0, j]) for j in range(9)]
    assert moved == [j in (3, 4, 5) for j in range(9)], moved


def test_alibi_slopes_are_the_papers():
    assert alibi_slopes(8).tolist() == [2.0 ** -k for k in range(1, 9)]
    assert alibi_slopes(4).tolist() == [2.0 ** -k for k in (2, 4, 6, 8)]
    six = alibi_slopes(6).tolist()  # the 4 of nh=4, then every other one of nh=8's: 2^-1, 2^-3
    assert six == [2.0 ** -k for k in (2, 4, 6, 8, 1, 3)]


@pytest.mark.parametrize("causal", [True, False])
def test_alibi_adds_minus_slope_times_distance_to_each_heads_scores(causal):
    """The first block's attention, written out here with the ALiBi penalty -m_h |i - j|, equals what
    the model computes; and ALiBi needs no table: it reads sequences beyond max_seq_len."""
    arch = "decoder" if causal else "encoder"
    model = tiny_model(arch, n_layer=1, pos="alibi", n_segment=0)
    attn, T, hs = model.transformer.blocks[0].attn, 9, model.config.head_size
    seen = {}
    attn.register_forward_hook(lambda m, args, out: seen.update(x=args[0], y=out))
    model(torch.randint(0, V, (2, T)))
    x = seen["x"]
    q, k, v = (proj(x).view(2, T, -1, hs).transpose(1, 2) for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    scores = q @ k.transpose(-2, -1) / hs**0.5 - alibi_slopes(model.config.n_head)[:, None, None] * (i - j).abs()
    if causal:
        scores = scores.masked_fill(j > i, float("-inf"))
    y = attn.o_proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(2, T, -1))
    torch.testing.assert_close(seen["y"], y, atol=1e-5, rtol=1e-5)
    assert model(torch.randint(0, V, (1, model.config.max_seq_len + 10))).shape[1] == model.config.max_seq_len + 10


def test_shared_layers_are_one_block_applied_n_layer_times(tmp_path):
    """ALBERT's sharing equals a plain model whose blocks all hold one block's weights; it has one
    block's parameters, keeps a cache entry per layer, and saves and loads (the shared block once)."""
    shared = tiny_model("decoder", n_layer=3, share_layers=True)
    plain = tiny_model("decoder", n_layer=3)
    one = {k.split(".", 3)[3]: v for k, v in shared.state_dict().items() if k.startswith("transformer.blocks.0.")}
    state = {k: v for k, v in shared.state_dict().items() if ".blocks." not in k}
    state.update({f"transformer.blocks.{i}.{k}": v for i in range(3) for k, v in one.items()})
    plain.load_state_dict(state)
    ids = torch.randint(0, V, (2, 8))
    torch.testing.assert_close(shared(ids), plain(ids))
    n_block = sum(p.numel() for p in shared.transformer.blocks[0].parameters())
    assert sum(p.numel() for p in plain.parameters()) - sum(p.numel() for p in shared.parameters()) == 2 * n_block
    cache = KVCache()
    shared(ids, cache=cache)
    assert sorted(cache.self_kv) == [0, 1, 2]
    save_pretrained(tmp_path, shared)
    torch.testing.assert_close(from_pretrained(tmp_path)(ids), shared(ids))


def test_a_mixture_of_experts_is_each_tokens_gated_top_k_experts():
    """Each token's output, written out: its k most probable experts, weighted by their router
    probabilities renormalised over the k."""
    model = tiny_model("decoder", n_layer=1, mlp="moe", moe_experts=4, moe_top_k=2)
    layer = model.transformer.blocks[0].mlp
    x = torch.randn(2, 5, model.config.n_embd)
    out = layer(x)
    for b in range(2):
        for t in range(5):
            p = layer.router(x[b, t]).softmax(-1)
            top = p.topk(2)
            want = sum(w / top.values.sum() * layer.experts[e](x[b, t][None, None])[0, 0] for w, e in zip(top.values, top.indices))
            torch.testing.assert_close(out[b, t], want, atol=1e-5, rtol=1e-5)
    assert layer.tokens_per_expert.sum() == 2 * 5 * 2


def test_the_load_balancing_loss_is_one_when_uniform_and_the_trainer_adds_it(tmp_path):
    """L_aux = E sum_e f_e P_e is 1 for a uniform router; a trainer's loss holds moe_aux_weight x
    L_aux beside the task's, and its metrics the tokens per expert."""
    model = tiny_model("decoder", n_layer=1, mlp="moe", moe_experts=4, moe_top_k=2)
    layer = model.transformer.blocks[0].mlp
    torch.nn.init.zeros_(layer.router.weight)
    layer(torch.randn(2, 5, model.config.n_embd))
    assert layer.aux_loss.item() == pytest.approx(1.0)
    losses = {}
    for weight in (0.0, 10.0):
        m = tiny_model("decoder", mlp="moe", moe_aux_weight=weight)
        data = LMBatches()
        t = Trainer(m, None, data, lm_loss, lm_targets, lambda m: {}, TrainArgs(out=str(tmp_path / str(weight)), max_steps=2, eval_every=2,
                                                                                save_every=1000, warmup=1))
        losses[weight] = t.train_step(data.batch(0), 1e-3)
        t.fit()
        record = [json.loads(line) for line in (tmp_path / str(weight) / "metrics.jsonl").read_text().splitlines()][-1]
        assert sum(record["tokens_per_expert"]) > 0 and 0.25 <= record["max_expert_share"] <= 1
    assert losses[10.0] - losses[0.0] == pytest.approx(10.0, rel=0.5)  # 10 x L_aux, and L_aux is about 1


def test_bad_settings_are_one_clear_error():
    with pytest.raises(ValueError, match="n_kv_head=3: must divide n_head=4"):
        tiny_config("decoder", n_kv_head=3)
    with pytest.raises(ValueError, match="layer_heads .* applies to multi-head attention"):
        tiny_config("decoder", n_kv_head=2, layer_heads=[2, 2])
    with pytest.raises(ValueError, match="parallel_block: needs norm_position='pre' and one stack"):
        tiny_config("encoder-decoder", parallel_block=True)
    with pytest.raises(ValueError, match="parallel_block: needs norm_position='pre'"):
        tiny_config("encoder", parallel_block=True, norm_position="post")
    with pytest.raises(ValueError, match="moe_top_k=5 must lie in"):
        tiny_config("decoder", mlp="moe", moe_top_k=5)
    with pytest.raises(ValueError, match="do not apply to share_layers"):
        tiny_config("decoder", share_layers=True, layer_ff=[8, 8])
    from minilm.training.electra import ELECTRA
    with pytest.raises(ValueError, match="ELECTRA with ALiBi positions is not supported"):
        ELECTRA(build_model(tiny_config("encoder", head="mlm", pos="alibi")))
    with pytest.raises(ValueError, match="does not apply to ALiBi"):
        tiny_config("decoder", pos="alibi", layer_heads=[2, 2])
    with pytest.raises(ValueError, match="attn_window=0: must be a positive number"):
        tiny_config("decoder", attn_window=0)
    assert tiny_config("decoder", n_kv_head=4).n_kv_head is None  # as many as n_head: plain multi-head, one spelling
    with pytest.raises(ValueError, match="a GPT-2 checkpoint needs n_kv_head=None"):
        gpt2.config_to_hf(tiny_config("decoder", n_kv_head=2))
