"""Where an encoder-decoder's decoder starts: a converted BART keeps its decoder_start_token_id (</s>,
not <s>), and generation, fine-tuning batches and the export back to Hugging Face all use it."""

import json

import pytest

pytest.importorskip("transformers")

import minilm  # noqa: E402
from minilm import interop  # noqa: E402
from minilm.interop import bart  # noqa: E402
from minilm.data.tasks import Example  # noqa: E402
from minilm.data.text_to_text import Seq2SeqData  # noqa: E402
from minilm.inference import predict  # noqa: E402
from minilm.tokenizer import Tokenizer  # noqa: E402
from test_interop import hf_model  # noqa: E402
from test_interop_files import bpe_tokenizer  # noqa: E402

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # BART's ids 0-4


@pytest.fixture(scope="module")
def bart_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("bart")
    bpe_tokenizer(SPECIALS).save(str(path / "tokenizer.json"))
    vocab = Tokenizer.load(path).vocab_size
    hf = hf_model("BartForConditionalGeneration", "BartConfig", encoder_layers=2, decoder_layers=2, d_model=32,
                  encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48,
                  vocab_size=vocab, max_position_embeddings=40, tie_word_embeddings=False,
                  dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
    hf.save_pretrained(path)
    assert hf.config.decoder_start_token_id == 2 != hf.config.bos_token_id
    return path


def test_a_converted_bart_keeps_its_decoder_start(bart_dir):
    model = minilm.from_pretrained(bart_dir)
    assert model.config.decoder_start_id == 2
    assert model.config.decoder_start(Tokenizer.load(bart_dir)) == 2


@pytest.mark.parametrize("beams", [1, 2])
def test_generation_starts_from_it(bart_dir, monkeypatch, beams):
    """infer.py generate's path hands the decoder loop the model's start (the loop itself equals
    transformers' greedy search from the same start: tests/test_interop.py)."""
    model, tk = minilm.from_pretrained(bart_dir), Tokenizer.load(bart_dir)
    name = "beam_search" if beams > 1 else "generate"
    real, starts = getattr(predict, name), []

    def spy(*args, **kwargs):
        starts.append(kwargs["decoder_start_id"])
        return real(*args, **kwargs)

    monkeypatch.setattr(predict, name, spy)
    predict.generate_texts(model, tk, ["the cat sat on the mat"], predict.GenerationSettings(max_new_tokens=4, greedy=True, num_beams=beams))
    assert starts == [2]


def test_fine_tuning_batches_start_from_it(bart_dir):
    tk = Tokenizer.load(bart_dir)
    data = Seq2SeqData([Example("the cat", None, "a dog", "row 1")], tk, 16, 1, decoder_start=2)
    assert data.decoder_inputs[0][0] == 2 and data.decoder_inputs[0][1:] == data.targets[0][:-1]
    assert Seq2SeqData([Example("the cat", None, "a dog", "row 1")], tk, 16, 1).decoder_inputs[0][0] == tk.bos_id


def test_the_export_writes_it_back(bart_dir, tmp_path):
    model, tk = minilm.from_pretrained(bart_dir), Tokenizer.load(bart_dir)
    interop.save_hf(model, tk, tmp_path / "hf")
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["decoder_start_token_id"] == 2
    own = model.config.replace(decoder_start_id=None)  # minilm's own encoder-decoders start from BOS
    assert bart.config_to_hf(own, tk)[0]["decoder_start_token_id"] == tk.bos_id == 0


def test_a_start_outside_the_vocabulary_is_refused():
    with pytest.raises(ValueError, match="decoder_start_id=999: not a token id of the 300-token vocabulary"):
        minilm.ModelConfig(arch="encoder-decoder", head="lm", vocab_size=300, decoder_start_id=999)
