"""The config: validation with clear messages, presets, JSON round trip; every choice builds and trains."""

import json

import pytest
import torch

from conftest import tiny_config
from minilm.config import ARCH_DEFAULTS, HEADS, MLPS, NORM_POSITIONS, NORMS, POSITIONS, PRESETS, ModelConfig, from_preset
from minilm.model.families import build_model
from minilm.optim import AdamW


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(n_embd=30, n_head=4), "not divisible"),
        (dict(pos="nope"), "ModelConfig.pos='nope'"),
        (dict(norm="batchnorm"), "ModelConfig.norm"),
        (dict(mlp="geglu"), "ModelConfig.mlp"),
        (dict(attn_impl="flash"), "ModelConfig.attn_impl"),
        (dict(head="mlm"), "ModelConfig.head='mlm'"),  # a decoder has no MLM head
        (dict(n_layer=0), "n_layer"),
        (dict(dropout=1.5), "dropout"),
        (dict(head="cls"), "needs n_labels"),
        (dict(pos="rope", n_embd=36, n_head=4), "even head size"),
        (dict(pos_offset=-1), "ModelConfig.pos_offset=-1: must be >= 0"),
        (dict(pos="rope", pos_offset=2), "pos_offset=2: applies to pos='learned' only, not 'rope'"),
        (dict(head="none", lm_head_bias=True), "lm_head_bias: applies to the 'lm' head only, not 'none'"),
    ],
)
def test_invalid_configs_are_refused_with_a_clear_message(changes, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("+", r"\+")):
        tiny_config("decoder", **changes)


def test_nsp_head_needs_segments():
    with pytest.raises(ValueError, match="n_segment >= 2"):
        tiny_config("encoder", head="mlm+nsp", n_segment=0)


def test_json_round_trip_and_unknown_fields(tmp_path):
    config = tiny_config("encoder", head="cls", n_labels=3, labels=["a", "b", "c"])
    config.save(tmp_path / "config.json")
    assert ModelConfig.load(tmp_path / "config.json") == config
    data = config.to_dict() | {"n_layers": 3}
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"bad.json: unknown config field\(s\) n_layers"):
        ModelConfig.load(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text('{"arch": "encoder",\n "n_layer": }')
    with pytest.raises(ValueError, match="broken.json: line 2"):
        ModelConfig.load(tmp_path / "broken.json")


def test_presets_apply_family_defaults_then_overrides():
    config = from_preset("small", "decoder", head="lm", vocab_size=100, n_layer=3)
    assert (config.n_layer, config.n_embd, config.vocab_size, config.mlp) == (3, 384, 100, ARCH_DEFAULTS["decoder"]["mlp"])
    with pytest.raises(ValueError, match="unknown preset"):
        from_preset("huge")
    for name in PRESETS:
        from_preset(name, "encoder")


def one_training_step(config):
    torch.manual_seed(0)
    model = build_model(config).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = AdamW(model.parameters(), lr=1e-2)
    ids = torch.randint(0, config.vocab_size, (2, 8))
    if config.arch == "encoder-decoder":
        out = model(ids, ids[:, :5])
    elif config.arch == "encoder":
        out = model(ids, torch.ones_like(ids), torch.zeros_like(ids) if config.n_segment else None)
    else:
        out = model(ids)
    loss = out.float().pow(2).mean()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) > 0.8 * len(before)


CHOICES = [("pos", POSITIONS), ("norm", NORMS), ("norm_position", NORM_POSITIONS), ("mlp", MLPS), ("attn_impl", ("math", "sdpa")),
           ("embed_norm", (True, False)), ("bias", (True, False)), ("tie_embeddings", (True, False)),
           ("scale_embedding", (True, False)), ("pos_offset", (0, 2))]


@pytest.mark.parametrize("arch", ["encoder", "decoder", "encoder-decoder"])
@pytest.mark.parametrize("field, value", [(f, v) for f, values in CHOICES for v in values])
def test_every_choice_builds_and_trains_a_step(arch, field, value):
    head = {"encoder": "mlm+nsp", "decoder": "lm", "encoder-decoder": "lm"}[arch]
    one_training_step(tiny_config(arch, head, dropout=0.1, attn_dropout=0.1, **{field: value}))


@pytest.mark.parametrize("arch", list(HEADS))
def test_every_head_builds_and_trains_a_step(arch):
    for head in HEADS[arch]:
        one_training_step(tiny_config(arch, head, n_labels=3))


def test_pos_offset_scale_embedding_and_lm_head_bias_do_what_they_say():
    """Each is the plain model with its weights moved: rows of the position table shifted down,
    the token table scaled by sqrt(C), a constant added to every position's scores."""
    from conftest import tiny_model

    ids = torch.randint(0, 53, (2, 9), generator=torch.Generator().manual_seed(0))
    base = tiny_model("decoder", head="none")
    C = base.config.n_embd
    with torch.no_grad():
        expected = base(ids)

    shifted = build_model(base.config.replace(pos_offset=2)).eval()
    state = base.state_dict()
    state["transformer.embed.position.weight"] = torch.cat([torch.randn(2, C), state["transformer.embed.position.weight"]])
    shifted.load_state_dict(state)
    assert shifted.transformer.embed.position.weight.shape == (base.config.max_seq_len + 2, C)

    scaled = build_model(base.config.replace(scale_embedding=True)).eval()
    state = base.state_dict()
    state["transformer.embed.token.weight"] = state["transformer.embed.token.weight"] / C**0.5
    scaled.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(shifted(ids), expected, rtol=0, atol=0)
        torch.testing.assert_close(scaled(ids), expected)

    plain = tiny_model("decoder", head="lm")
    biased = build_model(plain.config.replace(lm_head_bias=True)).eval()
    assert torch.equal(biased.lm_head.bias, torch.zeros(53))  # a new bias starts at zero
    bias = torch.randn(53)
    biased.load_state_dict(plain.state_dict() | {"lm_head.bias": bias})
    with torch.no_grad():
        torch.testing.assert_close(biased(ids), plain(ids) + bias)
