"""Beam search: width 1 is greedy, batches equal one-by-one, and converted GPT-2 and BART give the
same tokens as `transformers` `generate(num_beams=...)`."""

import pytest
import torch

from conftest import tiny_model
from minilm.inference.beam import beam_search
from minilm.inference.generate import generate, left_pad

V = 53


def upto_eos(out, eos):
    """Rows as lists, cut after the first EOS (the two sides pad after it with different ids)."""
    rows = out.tolist()
    return [row[: row.index(eos) + 1] if eos in row else row for row in rows]


def test_beam_width_1_is_greedy():
    model = tiny_model("decoder")
    ids, mask = left_pad([[3, 9, 4, 7], [5, 1]], pad_id=0)
    assert torch.equal(beam_search(model, ids, mask, 15, num_beams=1), generate(model, ids, mask, 15, greedy=True))
    model = tiny_model("encoder-decoder")
    src = torch.randint(1, V, (2, 6))
    assert torch.equal(beam_search(model, src, None, 12, num_beams=1, decoder_start_id=2),
                       generate(model, src, None, 12, greedy=True, decoder_start_id=2))


@pytest.mark.parametrize("arch", ["decoder", "encoder-decoder"])
def test_batched_beams_equal_one_by_one(arch):
    model = tiny_model(arch)
    prompts = [[3, 9, 4, 7, 8, 2], [5, 1], [11, 12, 13]]
    ids, mask = left_pad(prompts, pad_id=0)
    kw = dict(max_new_tokens=10, num_beams=3, eos_id=7, decoder_start_id=2)
    batched = upto_eos(beam_search(model, ids, mask, **kw), 7)
    alone = [upto_eos(beam_search(model, torch.tensor([p]), None, **kw), 7)[0] for p in prompts]
    assert batched == alone


def test_beam_search_finds_a_sequence_at_least_as_probable_as_greedy():
    model = tiny_model("decoder")
    prompt = torch.randint(1, V, (1, 4))

    def log_prob(new):
        seq = torch.cat([prompt, new], 1)
        logp = model(seq)[0, prompt.shape[1] - 1 : -1].log_softmax(-1)  # (N, V)
        return float(logp.gather(1, new[0][:, None]).sum())

    greedy = generate(model, prompt, max_new_tokens=8, greedy=True)
    beams = beam_search(model, prompt, None, 8, num_beams=5)
    assert beams.shape == greedy.shape and log_prob(beams) >= log_prob(greedy) - 1e-5


def test_bad_beam_settings_are_clear_errors():
    model = tiny_model("decoder")
    with pytest.raises(ValueError, match="num_beams must be >= 1"):
        beam_search(model, torch.tensor([[1, 2]]), None, 5, num_beams=0)
    with pytest.raises(ValueError, match="vocabulary of at least"):
        beam_search(model, torch.tensor([[1, 2]]), None, 5, num_beams=V)


# -- parity with transformers ------------------------------------------------------------------------------
transformers = pytest.importorskip("transformers")
from test_interop import HF_GREEDY, batch, make_bart, make_gpt2, randomize, saved  # noqa: E402

import minilm  # noqa: E402

N_NEW = 24
EOS = "the 7th token of the eos-free beam output of row 0, so that rows end at different lengths"


@pytest.fixture(scope="module")
def gpt2_pair(tmp_path_factory):
    hf = make_gpt2("3L 3H 48d, vocab 517, 67 positions", pad_token_id=0)
    randomize(hf, seed=3, std=0.3)  # large weights: the outputs wander instead of repeating one token
    return hf, minilm.from_pretrained(saved(hf, tmp_path_factory.mktemp("gpt2")))


@pytest.mark.parametrize("num_beams, length_penalty, eos, early_stopping", [
    (4, 1.0, None, False), (3, 0.5, None, False), (4, 1.0, EOS, False), (4, 2.0, EOS, False), (4, -1.0, EOS, False),
    (4, 1.0, EOS, True),
])
def test_gpt2_beam_search_is_token_identical(gpt2_pair, num_beams, length_penalty, eos, early_stopping):
    hf, model = gpt2_pair
    ids, mask = left_pad([[5, 9, 100, 200, 7, 8, 9], [44, 45, 46], [300, 1, 2, 3, 4, 5]], pad_id=0)
    if eos == EOS:
        eos = int(beam_search(model, ids, mask, N_NEW, num_beams=num_beams)[0, 6])
    kw = dict(num_beams=num_beams, length_penalty=length_penalty, early_stopping=early_stopping)
    expected = hf.generate(input_ids=ids, attention_mask=mask, pad_token_id=0, **{**HF_GREEDY, **kw, "max_new_tokens": N_NEW,
                                                                                    "eos_token_id": eos})
    got = beam_search(model, ids, mask, N_NEW, eos_id=eos, **kw)
    assert upto_eos(expected[:, ids.shape[1]:], eos) == upto_eos(got, eos)
    if eos is not None and length_penalty <= 1.0:  # (a penalty of 2 favours the long, EOS-free hypotheses here)
        assert any(eos in row for row in got.tolist()), "no hypothesis ended at EOS: the test would prove less"


def test_bart_beam_search_is_token_identical(tmp_path):
    hf = make_bart("enc 3L / dec 1L, 5H 40d, ff 56, vocab 301, 45 positions", tie_word_embeddings=False, decoder_layers=2)
    model = minilm.from_pretrained(saved(hf, tmp_path))
    src, src_mask = batch(hf.config.vocab_size, B=2, T=9, pad_rows=((1, 6),))
    start, pad = hf.config.decoder_start_token_id, hf.config.pad_token_id
    for eos in (None, EOS):
        if eos == EOS:
            eos = int(beam_search(model, src, src_mask, N_NEW, num_beams=4, decoder_start_id=start)[0, 5])
        expected = hf.generate(input_ids=src, attention_mask=src_mask, decoder_start_token_id=start, pad_token_id=pad,
                               **{**HF_GREEDY, "num_beams": 4, "max_new_tokens": N_NEW, "eos_token_id": eos})
        got = beam_search(model, src, src_mask, N_NEW, num_beams=4, eos_id=eos, pad_id=pad, decoder_start_id=start)
        assert upto_eos(expected[:, 1:], eos) == upto_eos(got, eos)
