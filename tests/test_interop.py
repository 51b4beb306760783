"""Parity with Hugging Face `transformers`: BERT, GPT-2 and BART checkpoints in and out of minilm.

Each test builds a randomly initialised transformers model of an odd size, with every parameter
drawn at random (biases and norms included, so a swapped, transposed or dropped tensor shows),
converts it, and compares in float32 with dropout off: logits within 1e-5 at every real
position of batches with padding (and token types for BERT), greedy generation token for token,
and round trips that are bit-identical. Files, errors and the convert command:
tests/test_interop_files.py.
"""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

import minilm  # noqa: E402
from conftest import tiny_config  # noqa: E402
from minilm import interop  # noqa: E402
from minilm.inference.generate import generate, left_pad  # noqa: E402
from minilm.model.families import build_model  # noqa: E402

TOL = 1e-5
transformers.logging.set_verbosity_error()


def randomize(model, seed=0, std=0.02):
    """Every parameter (and BART's final_logits_bias) drawn at random; norms' gains near 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in list(model.named_parameters()) + [(n, b) for n, b in model.named_buffers() if "logits_bias" in n]:
            is_gain = p.dim() == 1 and ("norm" in name.lower() or ".ln_" in name) and name.endswith("weight")
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g) if is_gain else std * torch.randn(p.shape, generator=g))
    return model.eval()


def hf_model(cls_name, config_cls, seed=0, std=0.02, **fields):
    torch.manual_seed(seed)
    model = getattr(transformers, cls_name)(getattr(transformers, config_cls)(**fields))
    randomize(model, seed, std)
    if hasattr(model, "model") and hasattr(model.model, "encoder") and not model.config.tie_word_embeddings:
        with torch.no_grad():  # untied in transformers 5, but minilm's encoder and decoder share one table
            model.model.decoder.embed_tokens.weight.copy_(model.model.encoder.embed_tokens.weight)
    return model.eval()


def saved(model, path):
    model.save_pretrained(path)
    return path


def batch(vocab, B=3, T=13, seed=1, pad_rows=((1, 9), (2, 4)), low=3):
    """Random ids (B, T) with right padding: row r is real up to column c for each (r, c)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(low, vocab, (B, T), generator=g)
    mask = torch.ones_like(ids)
    for r, c in pad_rows:
        mask[r, c:] = 0
        ids[r, c:] = 0
    return ids, mask


def max_diff(a, b, mask=None):
    d = (a.float() - b.float()).abs()
    return float((d[mask.bool()] if mask is not None else d).max())


def main_output(out):
    """The logits of a model with a head, the last hidden states of a bare one."""
    return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state


def report(family, name, diff):
    print(f"PARITY | {family} | {name} | {diff:.2e}")


# -- configurations: each one odd in some way ----------------------------------------------------------
NO_DROPOUT = {
    "gpt2": dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None),
    "bert": dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
    "bart": dict(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0),
}
GPT2 = {
    "3L 3H 48d, vocab 517, 67 positions": dict(n_layer=3, n_head=3, n_embd=48, vocab_size=517, n_positions=67),
    "2L 5H 40d, n_inner 72, exact gelu, eps 1e-6, untied head": dict(
        n_layer=2, n_head=5, n_embd=40, n_inner=72, vocab_size=131, n_positions=29, layer_norm_epsilon=1e-6,
        activation_function="gelu", tie_word_embeddings=False),
}
BERT = {
    "ForPreTraining 2L 3H 36d, ff 50, vocab 211, 2 token types": (
        "BertForPreTraining", dict(num_hidden_layers=2, num_attention_heads=3, hidden_size=36, intermediate_size=50,
                                   vocab_size=211, max_position_embeddings=40, type_vocab_size=2)),
    "ForMaskedLM 3L 5H 20d, gelu_new, 3 token types, untied": (
        "BertForMaskedLM", dict(num_hidden_layers=3, num_attention_heads=5, hidden_size=20, intermediate_size=44,
                                vocab_size=97, max_position_embeddings=17, type_vocab_size=3, hidden_act="gelu_new",
                                layer_norm_eps=1e-7, tie_word_embeddings=False)),
    "Model 1L 2H 24d, relu, eps 1e-12": (
        "BertModel", dict(num_hidden_layers=1, num_attention_heads=2, hidden_size=24, intermediate_size=24,
                          vocab_size=50, max_position_embeddings=15, type_vocab_size=2, hidden_act="relu")),
    "ForSequenceClassification 2L 2H 16d, 3 labels": (
        "BertForSequenceClassification", dict(num_hidden_layers=2, num_attention_heads=2, hidden_size=16,
                                              intermediate_size=30, vocab_size=61, max_position_embeddings=20,
                                              num_labels=3)),
    "ForTokenClassification 2L 4H 32d, 5 labels": (
        "BertForTokenClassification", dict(num_hidden_layers=2, num_attention_heads=4, hidden_size=32,
                                           intermediate_size=64, vocab_size=73, max_position_embeddings=16,
                                           num_labels=5)),
}
BART = {
    "enc 3L / dec 1L, 5H 40d, ff 56, vocab 301, 45 positions": (
        "BartForConditionalGeneration", dict(encoder_layers=3, decoder_layers=1, d_model=40, encoder_attention_heads=5,
                                             decoder_attention_heads=5, encoder_ffn_dim=56, decoder_ffn_dim=56,
                                             vocab_size=301, max_position_embeddings=45)),
    "enc 1L / dec 2L, 3H 24d, gelu_new, scale_embedding, untied": (
        "BartForConditionalGeneration", dict(encoder_layers=1, decoder_layers=2, d_model=24, encoder_attention_heads=3,
                                             decoder_attention_heads=3, encoder_ffn_dim=40, decoder_ffn_dim=40,
                                             vocab_size=157, max_position_embeddings=33, activation_function="gelu_new",
                                             scale_embedding=True, tie_word_embeddings=False)),
    "BartModel enc 2L / dec 3L, 2H 16d": (
        "BartModel", dict(encoder_layers=2, decoder_layers=3, d_model=16, encoder_attention_heads=2,
                          decoder_attention_heads=2, encoder_ffn_dim=24, decoder_ffn_dim=24, vocab_size=40,
                          max_position_embeddings=20)),
}


def make_gpt2(name, **extra):
    return hf_model("GPT2LMHeadModel", "GPT2Config", **{**GPT2[name], **NO_DROPOUT["gpt2"], **extra})


def make_bert(name):
    cls_name, fields = BERT[name]
    return hf_model(cls_name, "BertConfig", **fields, **NO_DROPOUT["bert"])


def make_bart(name, **extra):
    cls_name, fields = BART[name]
    return hf_model(cls_name, "BartConfig", **{**fields, **NO_DROPOUT["bart"], **extra})


# -- outputs of both sides on the same inputs ------------------------------------------------------------
def gpt2_outputs(hf, model):
    ids, mask = batch(hf.config.vocab_size)
    with torch.no_grad():
        expected = main_output(hf(input_ids=ids, attention_mask=mask))
        got = model(ids, mask)
    return expected, got, mask


def bert_inputs(hf):
    ids, mask = batch(hf.config.vocab_size, T=min(13, hf.config.max_position_embeddings))
    segments = torch.zeros_like(ids)
    segments[:, 6:] = 1  # segment B
    segments[0, 10:] = hf.config.type_vocab_size - 1
    return ids, mask, segments


def bert_outputs(hf, model):
    ids, mask, segments = bert_inputs(hf)
    with torch.no_grad():
        out = hf(input_ids=ids, attention_mask=mask, token_type_ids=segments)
        got = model(ids, mask, segments)
    expected = out.prediction_logits if model.config.head == "mlm+nsp" else main_output(out)
    if model.config.head == "regression":
        got = got[:, None]  # transformers keeps a (B, 1) column
    if got.dim() == 2:  # one row per sequence
        mask = torch.ones(got.shape[0], dtype=torch.long)
    return expected, got, mask


def nsp_outputs(hf, model):
    """BertForPreTraining's second output: next-sentence logits (B, 2)."""
    ids, mask, segments = bert_inputs(hf)
    with torch.no_grad():
        return hf(input_ids=ids, attention_mask=mask, token_type_ids=segments).seq_relationship_logits, \
            model.nsp_logits(model.hidden(ids, mask, segments))


def bart_outputs(hf, model):
    src, src_mask = batch(hf.config.vocab_size, T=11, pad_rows=((1, 6),))
    tgt, tgt_mask = batch(hf.config.vocab_size, T=8, seed=2, pad_rows=((0, 5), (2, 7)))
    with torch.no_grad():
        out = hf(input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt, decoder_attention_mask=tgt_mask)
        got = model(src, tgt, src_mask, tgt_mask)
    return main_output(out), got, tgt_mask


OUTPUTS = {"gpt2": gpt2_outputs, "bert": bert_outputs, "bart": bart_outputs}


# -- Hugging Face -> minilm: logits ----------------------------------------------------------------------
@pytest.mark.parametrize("name", list(GPT2))
def test_gpt2_logits_match(tmp_path, name):
    hf = make_gpt2(name)
    model = minilm.from_pretrained(saved(hf, tmp_path))
    assert model.config.arch == "decoder" and model.config.tie_embeddings == hf.config.tie_word_embeddings
    diff = max_diff(*gpt2_outputs(hf, model))
    report("GPT-2", name, diff)
    assert diff < TOL


@pytest.mark.parametrize("name", list(BERT))
def test_bert_logits_match(tmp_path, name):
    hf = make_bert(name)
    model = minilm.from_pretrained(saved(hf, tmp_path))
    assert model.config.head == {"BertForPreTraining": "mlm+nsp", "BertForMaskedLM": "mlm", "BertModel": "none",
                                 "BertForSequenceClassification": "cls", "BertForTokenClassification": "token"}[BERT[name][0]]
    diff = max_diff(*bert_outputs(hf, model))
    if model.config.head == "mlm+nsp":
        diff = max(diff, max_diff(*nsp_outputs(hf, model)))
    report("BERT", name, diff)
    assert diff < TOL


@pytest.mark.parametrize("name", list(BART))
def test_bart_logits_match(tmp_path, name):
    hf = make_bart(name)
    model = minilm.from_pretrained(saved(hf, tmp_path))
    assert model.config.pos_offset == 2 and model.config.scale_embedding == hf.config.scale_embedding
    diff = max_diff(*bart_outputs(hf, model))
    report("BART", name, diff)
    assert diff < TOL


def spoil_gpt2(model):  # q and k taken from the wrong thirds of c_attn
    attn = model.transformer.blocks[0].attn
    for name in ("weight", "bias"):
        q, k = getattr(attn.q_proj, name), getattr(attn.k_proj, name)
        q.data, k.data = k.data.clone(), q.data.clone()


def spoil_bert(model):  # token types 0 and 1 swapped
    table = model.transformer.embed.segment.weight
    table.data = table.data[[1, 0, *range(2, table.shape[0])]]


def spoil_bart(model):  # positions read from row p, not p + 2
    for stack in (model.encoder, model.decoder):
        stack.embed.position.weight.data = stack.embed.position.weight.data.roll(2, dims=0)


@pytest.mark.parametrize("family, spoil", [("gpt2", spoil_gpt2), ("bert", spoil_bert), ("bart", spoil_bart)])
def test_the_comparison_sees_a_wrong_mapping(tmp_path, family, spoil):
    hf = MAKE[family](next(iter({"gpt2": GPT2, "bert": BERT, "bart": BART}[family])))
    model = minilm.from_pretrained(saved(hf, tmp_path))
    spoil(model)
    assert max_diff(*OUTPUTS[family](hf, model)) > 1e-3


def test_math_attention_matches_too(tmp_path):
    hf = make_gpt2("3L 3H 48d, vocab 517, 67 positions")
    model = minilm.from_pretrained(saved(hf, tmp_path), attn_impl="math")
    assert model.config.attn_impl == "math" and max_diff(*gpt2_outputs(hf, model)) < TOL


# -- greedy generation -------------------------------------------------------------------------------------
N_NEW = 32
# Both greedy loops must compare the same thing: transformers' BART generation forces BOS after the
# start token and EOS at the length limit, and stops at EOS; all three are switched off here, and
# the decoder starts from config.decoder_start_token_id on both sides.
HF_GREEDY = dict(do_sample=False, num_beams=1, max_new_tokens=N_NEW, eos_token_id=None, forced_bos_token_id=None,
                 forced_eos_token_id=None, no_repeat_ngram_size=0, repetition_penalty=1.0)


def test_gpt2_greedy_generation_is_token_identical(tmp_path):
    # larger weights than a fresh init (std 0.3) so that greedy decoding wanders instead of repeating a token
    hf = make_gpt2("3L 3H 48d, vocab 517, 67 positions", pad_token_id=0)
    randomize(hf, seed=3, std=0.3)
    model = minilm.from_pretrained(saved(hf, tmp_path))
    ids, mask = left_pad([[5, 9, 100, 200, 7, 8, 9], [44, 45, 46], [300, 1, 2, 3, 4, 5]], pad_id=0)
    expected = hf.generate(input_ids=ids, attention_mask=mask, pad_token_id=0, **HF_GREEDY)[:, ids.shape[1]:]
    got = generate(model, ids, mask, max_new_tokens=N_NEW, greedy=True)
    assert expected.shape == got.shape == (3, N_NEW)
    assert torch.equal(expected, got)
    assert all(len(set(row)) >= 8 for row in got.tolist()), "a degenerate sequence would prove little"


def test_bart_greedy_generation_is_token_identical(tmp_path):
    # untied head: with the output matrix = the input table a random BART repeats its last token
    hf = make_bart("enc 3L / dec 1L, 5H 40d, ff 56, vocab 301, 45 positions", tie_word_embeddings=False, decoder_layers=2)
    model = minilm.from_pretrained(saved(hf, tmp_path))
    src, src_mask = batch(hf.config.vocab_size, B=2, T=9, pad_rows=((1, 6),))
    start = hf.config.decoder_start_token_id
    expected = hf.generate(input_ids=src, attention_mask=src_mask, decoder_start_token_id=start, **HF_GREEDY)
    got = generate(model, src, src_mask, max_new_tokens=N_NEW, greedy=True, decoder_start_id=start)
    assert torch.equal(expected[:, 0], torch.full((2,), start)) and expected.shape == (2, N_NEW + 1)
    assert torch.equal(expected[:, 1:], got)
    assert all(len(set(row)) >= 8 for row in got.tolist()), "a degenerate sequence would prove little"


# -- round trips -------------------------------------------------------------------------------------------
ROUND_TRIP = {
    "encoder mlm+nsp": dict(arch="encoder", head="mlm+nsp"),
    "encoder mlm untied, gelu_tanh": dict(arch="encoder", head="mlm", tie_embeddings=False, mlp="gelu_tanh"),
    "encoder none, 3 segments": dict(arch="encoder", head="none", n_segment=3),
    "encoder cls": dict(arch="encoder", head="cls", n_labels=3, labels=["neg", "neu", "pos"]),
    "encoder regression": dict(arch="encoder", head="regression"),
    "encoder token": dict(arch="encoder", head="token", n_labels=2, labels=["O", "X"]),
    "decoder lm": dict(arch="decoder", head="lm", mlp="gelu_tanh"),
    "decoder lm untied, d_ff 40": dict(arch="decoder", head="lm", tie_embeddings=False, d_ff=40),
    "decoder none": dict(arch="decoder", head="none", mlp="relu"),
    "encoder-decoder lm, dec 3L, scaled": dict(arch="encoder-decoder", head="lm", n_decoder_layer=3, scale_embedding=True,
                                               lm_head_bias=True),
    "encoder-decoder lm untied": dict(arch="encoder-decoder", head="lm", tie_embeddings=False, lm_head_bias=True),
    "encoder-decoder none": dict(arch="encoder-decoder", head="none"),
}
FAMILY_FIELDS = {
    "encoder": dict(norm_position="post", embed_norm=True, norm_eps=1e-12),
    "decoder": dict(norm_position="pre", embed_norm=False),
    "encoder-decoder": dict(norm_position="post", embed_norm=True, pos_offset=2),
}


def minilm_model(arch, head, seed=0, **changes):
    config = tiny_config(arch, head, **{**FAMILY_FIELDS[arch], **changes})
    torch.manual_seed(seed)
    return randomize(build_model(config), seed)


def hf_load(path):
    architecture = json.loads((path / "config.json").read_text())["architectures"][0]
    return getattr(transformers, architecture).from_pretrained(path).eval()


@pytest.mark.parametrize("name", list(ROUND_TRIP))
def test_minilm_to_hf_to_minilm_is_bit_identical(tmp_path, name):
    model = minilm_model(**ROUND_TRIP[name])
    interop.save_hf(model, None, tmp_path / "hf")
    hf = hf_load(tmp_path / "hf")  # transformers reads it and computes what minilm computes
    family = {"encoder": "bert", "decoder": "gpt2", "encoder-decoder": "bart"}[model.config.arch]
    assert max_diff(*OUTPUTS[family](hf, model)) < TOL
    if model.config.head == "mlm+nsp":
        assert max_diff(*nsp_outputs(hf, model)) < TOL
    back = minilm.from_pretrained(tmp_path / "hf")
    assert back.config == model.config
    own, other = model.state_dict(), back.state_dict()
    assert sorted(own) == sorted(other)
    for key in own:
        assert torch.equal(own[key], other[key]), key
    params = dict(back.named_parameters(remove_duplicate=False))
    if model.config.tie_embeddings and model.config.head in ("lm", "mlm", "mlm+nsp"):
        head = {"lm": "lm_head.weight", "mlm": "mlm.decoder.weight", "mlm+nsp": "mlm.decoder.weight"}[model.config.head]
        token = "encoder.embed.token.weight" if model.config.arch == "encoder-decoder" else "transformer.embed.token.weight"
        assert params[head] is params[token]  # still tied


HF_CASES = [("gpt2", n) for n in GPT2] + [("bert", n) for n in BERT] + [("bart", n) for n in BART]
MAKE = {"gpt2": make_gpt2, "bert": make_bert, "bart": make_bart}


@pytest.mark.parametrize("family, name", HF_CASES)
def test_hf_to_minilm_to_hf_loads_with_equal_outputs(tmp_path, family, name):
    hf = MAKE[family](name)
    model, _ = interop.load_hf(saved(hf, tmp_path / "a"))
    interop.save_hf(model, None, tmp_path / "b")
    again = hf_load(tmp_path / "b")
    assert type(again) is type(hf)
    expected, _, mask = OUTPUTS[family](hf, model)
    got, _, _ = OUTPUTS[family](again, model)
    assert max_diff(expected, got, mask) == 0.0
    if isinstance(hf, transformers.BertForPreTraining):
        assert torch.equal(nsp_outputs(hf, model)[0], nsp_outputs(again, model)[0])
    unused = set()
    if type(hf).__name__ == "BertModel":
        unused |= {k for k in hf.state_dict() if k.startswith("pooler.")}  # minilm's head "none" keeps no pooler
    if family == "bert" and not hf.config.tie_word_embeddings:
        unused.add("cls.predictions.bias")  # untied, transformers 5 uses cls.predictions.decoder.bias instead
    if family == "bart" and not hf.config.tie_word_embeddings:
        unused.add("model.shared.weight")  # untied, transformers 5 uses the encoder's and decoder's own tables
    original, reloaded = hf.state_dict(), again.state_dict()
    for key, t in original.items():
        if key not in unused:
            assert torch.equal(t, reloaded[key]), key
