"""Hugging Face files in and out of minilm: old weight names, pytorch_model.bin read without
unpickling objects, the tokenizer and config beside the weights, other vocabularies' special
tokens; clear errors for what minilm cannot hold; and `python -m minilm.convert` both ways.
Parity of the outputs themselves: tests/test_interop.py."""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from tokenizers import Tokenizer as HFTokenizer  # noqa: E402
from tokenizers import decoders, models, pre_tokenizers, trainers  # noqa: E402

import minilm  # noqa: E402
from minilm import convert, interop  # noqa: E402
from minilm.config import ModelConfig  # noqa: E402
from minilm.tokenizer import Tokenizer  # noqa: E402
from test_interop import (BART, BERT, GPT2, MAKE, TOL, bert_outputs, gpt2_outputs, hf_load, make_bart,  # noqa: E402
                          make_bert, max_diff, minilm_model, saved)


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
