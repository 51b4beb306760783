"""Parity with Hugging Face `transformers`: BERT, GPT-2 and BART checkpoints in and out of minilm.

Each test builds a randomly initialised transformers model of an odd size, with every parameter
drawn at random (biases and norms included, so a swapped, transposed or dropped tensor shows),
converts it, and compares in float32 with dropout off: logits within 1e-5 at every real
position of batches with padding (and token types for BERT), greedy generation token for token,
and round trips that are bit-identical.
"""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from tokenizers import Tokenizer as HFTokenizer  # noqa: E402
from tokenizers import decoders, models, pre_tokenizers, trainers  # noqa: E402

import minilm  # noqa: E402
from conftest import tiny_config  # noqa: E402
from minilm import convert, interop  # noqa: E402
from minilm.config import ModelConfig  # noqa: E402
from minilm.inference.generate import generate, left_pad  # noqa: E402
from minilm.model.families import build_model  # noqa: E402
from minilm.tokenizer import Tokenizer  # noqa: E402

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


# -- files -------------------------------------------------------------------------------------------------
def test_pytorch_model_bin_with_old_layernorm_names(tmp_path):
    hf = make_bert("ForPreTraining 2L 3H 36d, ff 50, vocab 211, 2 token types")
    hf.config.architectures = ["BertForPreTraining"]
    hf.config.save_pretrained(tmp_path)
    state = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
             for k, v in hf.state_dict().items()}
    torch.save(state, tmp_path / "pytorch_model.bin")
    assert not (tmp_path / "model.safetensors").exists()
    model = minilm.from_pretrained(tmp_path)
    assert max_diff(*bert_outputs(hf, model)) < TOL


def test_pytorch_model_bin_is_read_without_unpickling_objects(tmp_path):
    make_bert("Model 1L 2H 24d, relu, eps 1e-12").config.save_pretrained(tmp_path)
    torch.save({"weight": torch.ones(2), "config": ModelConfig()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"pytorch_model\.bin: not a loadable weights file"):
        minilm.from_pretrained(tmp_path)


def test_tokenizer_and_config_come_with_the_model(tmp_path):
    hf = make_bert("ForSequenceClassification 2L 2H 16d, 3 labels")
    hf.config.id2label = {0: "neg", 1: "neu", 2: "pos"}
    saved(hf, tmp_path)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "##s", "on", "mat", "."]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab + [f"w{i}" for i in range(61 - len(vocab))]) + "\n")
    model, tokenizer = interop.load_hf(tmp_path)
    assert model.config.labels == ["neg", "neu", "pos"] and model.config.head == "cls"
    assert ModelConfig.load(tmp_path / "config.json") == model.config  # how finetune.py reads --init
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id) == (0, 1, 2, 3, 4)
    assert Tokenizer.load(tmp_path).vocab_size == 61
    (tmp_path / "vocab.txt").rename(tmp_path / "elsewhere.txt")
    with pytest.raises(FileNotFoundError, match=r"tokenizer\.json: no tokenizer file"):
        Tokenizer.load(tmp_path)
    (tmp_path / "elsewhere.txt").rename(tmp_path / "vocab.txt")
    reference = transformers.BertTokenizer(str(tmp_path / "vocab.txt"))
    for a, b in [("The cats sat on the mat.", None), ("the cat", "sat on THE mats")]:
        assert tokenizer.encode(a, b) == reference(a, b)["input_ids"]
    ids, segments = tokenizer.encode_batch(["the cat"], ["the mat"])
    assert segments[0] == reference("the cat", "the mat")["token_type_ids"]


def bpe_tokenizer(specials):
    tk = HFTokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(["the cat sat on the mat", "a dog ran in the park"] * 20, trainer=trainer)
    return tk


@pytest.mark.parametrize("family", ["gpt2", "bart"])
def test_special_tokens_of_other_vocabularies(tmp_path, family):
    specials = ["<|endoftext|>"] if family == "gpt2" else ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    backend = bpe_tokenizer(specials)
    backend.enable_padding(length=20)  # a padding setting from elsewhere: minilm pads in its batches
    backend.save(str(tmp_path / "tokenizer.json"))
    tokenizer = Tokenizer.load(tmp_path / "tokenizer.json")
    if family == "gpt2":
        assert tokenizer.bos_id == tokenizer.eos_id == 0 and tokenizer.pad_id is None and tokenizer.cls_id is None
    else:
        assert (tokenizer.bos_id, tokenizer.pad_id, tokenizer.eos_id, tokenizer.unk_id, tokenizer.mask_id) == (0, 1, 2, 3, 4)
        assert (tokenizer.cls_id, tokenizer.sep_id) == (0, 2)
    assert tokenizer.special_ids == set(range(len(specials)))
    assert len(tokenizer.encode("the cat")) < 20
    # written beside an exported model, transformers reads the same tokenizer
    arch = "decoder" if family == "gpt2" else "encoder-decoder"
    model = minilm_model(arch, "lm", vocab_size=tokenizer.vocab_size, **({"lm_head_bias": True} if family == "bart" else {}))
    interop.save_hf(model, tokenizer, tmp_path / "hf")
    reference = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "the dog sat in the park"
    assert reference(text, add_special_tokens=False)["input_ids"] == tokenizer.encode(text, add_special=False)
    if family == "bart":
        assert (reference.pad_token_id, reference.mask_token_id, reference.eos_token_id) == (1, 4, 2)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["eos_token_id"] == tokenizer.eos_id


# -- bad input ---------------------------------------------------------------------------------------------
def write_config(path, **fields):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(fields))
    return path


def test_unsupported_model_type_and_architecture(tmp_path):
    write_config(tmp_path / "t5", model_type="t5", d_model=8)
    with pytest.raises(ValueError, match=r"t5.config\.json: model_type='t5' is not supported: minilm converts 'bert', 'gpt2', 'bart'"):
        minilm.from_pretrained(tmp_path / "t5")
    write_config(tmp_path / "qa", model_type="bert", architectures=["BertForQuestionAnswering"])
    with pytest.raises(ValueError, match=r"qa.config\.json: architectures=\['BertForQuestionAnswering'\] is not supported"):
        minilm.from_pretrained(tmp_path / "qa")


@pytest.mark.parametrize(
    "family, change, message",
    [
        ("gpt2", dict(scale_attn_by_inverse_layer_idx=True), r"scale_attn_by_inverse_layer_idx=True is not supported"),
        ("gpt2", dict(activation_function="silu"), r"activation_function='silu' is not supported"),
        ("bart", dict(decoder_ffn_dim=60), r"decoder_ffn_dim=60 is not supported \(minilm's decoder has the encoder's feed-forward size"),
        ("bert", dict(position_embedding_type="relative_key"), r"position_embedding_type='relative_key' is not supported"),
    ],
)
def test_config_fields_minilm_cannot_hold_are_named(tmp_path, family, change, message):
    hf = MAKE[family](next(iter({"gpt2": GPT2, "bert": BERT, "bart": BART}[family])))
    saved(hf, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ValueError, match=r"config\.json: " + message):
        minilm.from_pretrained(tmp_path)


def test_weights_that_do_not_fit(tmp_path):
    from safetensors.torch import load_file, save_file

    hf = make_bert("Model 1L 2H 24d, relu, eps 1e-12")
    saved(hf, tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    save_file({**tensors, "encoder.layer.0.attention.self.rotary.weight": torch.ones(2)}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"model\.safetensors: no rule of minilm/interop/bert\.py maps encoder\.layer\.0\.attention\.self\.rotary\.weight"):
        minilm.from_pretrained(tmp_path)
    save_file({k: v for k, v in tensors.items() if "intermediate" not in k}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"model\.safetensors: weights do not fit .*config\.json: missing transformer\.blocks\.0\.mlp\.fc1\.bias"):
        minilm.from_pretrained(tmp_path)
    save_file({**tensors, "embeddings.word_embeddings.weight": torch.zeros(7, 24)}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"transformer\.embed\.token\.weight has shape \(7, 24\), .*config\.json needs \(50, 24\)"):
        minilm.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"no weights \(model\.safetensors or pytorch_model\.bin\)"):
        minilm.from_pretrained(tmp_path)


def test_untied_bart_with_two_token_tables_is_refused(tmp_path):
    hf = make_bart("enc 1L / dec 2L, 3H 24d, gelu_new, scale_embedding, untied")
    with torch.no_grad():
        hf.model.decoder.embed_tokens.weight.add_(1.0)
    saved(hf, tmp_path)
    with pytest.raises(ValueError, match=r"encoder\.embed_tokens\.weight and decoder\.embed_tokens\.weight differ"):
        minilm.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "arch, changes, message",
    [
        ("encoder", dict(norm_position="pre"), r"ModelConfig\.norm_position='pre': a BERT checkpoint needs norm_position='post'"),
        ("encoder", dict(pos="rope"), r"ModelConfig\.pos='rope': a BERT checkpoint needs pos='learned'"),
        ("decoder", dict(norm="rmsnorm"), r"ModelConfig\.norm='rmsnorm': a GPT-2 checkpoint needs norm='layernorm'"),
        ("decoder", dict(mlp="swiglu"), r"ModelConfig\.mlp='swiglu': a GPT-2 checkpoint needs mlp='gelu_tanh'"),
        ("encoder-decoder", dict(pos_offset=0), r"ModelConfig\.pos_offset=0: a BART checkpoint needs pos_offset=2"),
    ],
)
def test_minilm_models_a_family_cannot_hold_are_refused(tmp_path, arch, changes, message):
    model = minilm_model(arch, None, **changes)
    with pytest.raises(ValueError, match=message):
        interop.save_hf(model, None, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


# -- the command line -------------------------------------------------------------------------------------
def test_convert_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit):
        convert.main(["--help"])
    out = capsys.readouterr().out
    for flag in ("--to-hf", "--from-hf", "--overwrite", "SRC", "DST"):
        assert flag in out


def test_convert_both_ways(tmp_path, capsys):
    model = minilm_model("decoder", "lm")
    minilm.save_pretrained(tmp_path / "ours", model)
    convert.main(["--to-hf", str(tmp_path / "ours"), str(tmp_path / "hf")])
    assert "GPT2LMHeadModel" in capsys.readouterr().out
    hf = hf_load(tmp_path / "hf")
    assert max_diff(*gpt2_outputs(hf, model)) < TOL
    convert.main(["--from-hf", str(tmp_path / "hf"), str(tmp_path / "back")])
    back = minilm.from_pretrained(tmp_path / "back")
    assert json.loads((tmp_path / "back" / "config.json").read_text())["arch"] == "decoder"  # a minilm checkpoint
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), back.state_dict().values()))
    with pytest.raises(SystemExit, match=r"back exists and is not empty \(give --overwrite"):
        convert.main(["--from-hf", str(tmp_path / "hf"), str(tmp_path / "back")])
    convert.main(["--from-hf", str(tmp_path / "hf"), str(tmp_path / "back"), "--overwrite"])


def test_convert_errors_name_the_file(tmp_path):
    write_config(tmp_path / "t5", model_type="t5")
    with pytest.raises(SystemExit, match=r"error: .*t5.config\.json: model_type='t5' is not supported"):
        convert.main(["--from-hf", str(tmp_path / "t5"), str(tmp_path / "out")])
    minilm.save_pretrained(tmp_path / "ours", minilm_model("decoder", "lm"))
    with pytest.raises(SystemExit, match=r"ours.config\.json: no \"model_type\" field, so not a Hugging Face checkpoint"):
        convert.main(["--from-hf", str(tmp_path / "ours"), str(tmp_path / "out")])
    with pytest.raises(SystemExit, match=r"error: .*nowhere: no such checkpoint directory"):
        convert.main(["--to-hf", str(tmp_path / "nowhere"), str(tmp_path / "out")])
    with pytest.raises(SystemExit):  # a direction is required
        convert.main([str(tmp_path / "ours"), str(tmp_path / "out")])
