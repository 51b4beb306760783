"""Tokenizers without a pad token (or BOS, EOS, CLS, SEP, MASK), as real checkpoints have them.

Real GPT-2's tokenizer.json holds only <|endoftext|>: a GPT-2 converted with such a tokenizer
generates in every mode (greedy, beams, a batch of prompts of different lengths, sampling,
streaming, infer.py, the server) and gives transformers' tokens, which pads with EOS when there is
no pad token. A BERT vocab.txt without [PAD] (or EOS, as BERT's has none) predicts, fills and
embeds batches of texts of different lengths as transformers does, and pretrains further. Where
a token is truly needed (fill-mask's mask token, an objective's), the error names it.
"""

import http.client
import json
import threading

import pytest
import torch

transformers = pytest.importorskip("transformers")

from tokenizers import Tokenizer as HFTokenizer  # noqa: E402
from tokenizers import models, pre_tokenizers  # noqa: E402

import infer  # noqa: E402
import train  # noqa: E402
from conftest import tiny_model  # noqa: E402
from minilm import convert  # noqa: E402
from minilm.data.pretrain import PretrainBatches, TokenizedCorpus  # noqa: E402
from minilm.data.tasks import Example  # noqa: E402
from minilm.data.text_to_text import Seq2SeqData, SFTData  # noqa: E402
from minilm.inference import predict  # noqa: E402
from minilm.inference.generate import left_pad, until_eos  # noqa: E402
from minilm.inference.predict import GenerationSettings  # noqa: E402
from minilm.inference.serve import make_server  # noqa: E402
from minilm.objectives import IGNORE_INDEX  # noqa: E402
from minilm.tokenizer import Tokenizer  # noqa: E402
from test_interop import BERT, NO_DROPOUT, hf_model, make_gpt2, randomize  # noqa: E402
from test_interop_files import bpe_tokenizer  # noqa: E402

N_NEW = 20
PROMPTS = ["the cat sat on the mat", "a dog", "the park ran in the"]
EOT = "<|endoftext|>"


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    """(transformers model, minilm model, tokenizer): a GPT-2 whose tokenizer.json has only
    <|endoftext|>, last in the vocabulary as in GPT-2's, converted with `minilm.convert --from-hf`.
    Two token ids are swapped in the weights so that row 0's greedy output reaches EOS early and
    the rows of a batch end at different lengths."""
    backend = bpe_tokenizer([])
    backend.add_special_tokens([EOT])
    eos = backend.token_to_id(EOT)
    hf = make_gpt2("3L 3H 48d, vocab 517, 67 positions", vocab_size=backend.get_vocab_size())
    randomize(hf, seed=3, std=0.3)  # large weights: the outputs wander instead of repeating one token
    prompts = [backend.encode(p, add_special_tokens=False).ids for p in PROMPTS]
    ids, mask = left_pad(prompts, eos)
    out = hf.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=N_NEW, pad_token_id=eos)
    first, *others = out[:, ids.shape[1]:].tolist()
    seen = [eos, *(t for p in prompts + others for t in p)]
    t = next(t for i, t in enumerate(first) if i >= 4 and t not in first[:i] + seen)  # row 0 alone will end there
    with torch.no_grad():  # tied: the input and output rows of t and EOS trade places
        hf.transformer.wte.weight[[t, eos]] = hf.transformer.wte.weight[[eos, t]].clone()
    hf.config.bos_token_id = hf.config.eos_token_id = hf.generation_config.bos_token_id = hf.generation_config.eos_token_id = eos
    hf_dir, out = tmp_path_factory.mktemp("hf-gpt2"), tmp_path_factory.mktemp("gpt2")
    hf.save_pretrained(hf_dir)
    backend.save(str(hf_dir / "tokenizer.json"))
    convert.main(["--from-hf", str(hf_dir), str(out), "--overwrite"])
    model, tk = predict.load(out)
    assert tk.pad_id is None and tk.bos_id == tk.eos_id == eos == tk.fill_id
    return hf, model, tk, out


def hf_tokens(hf, tk, prompts, **kw):
    """transformers' new tokens of each prompt, up to EOS; the batch left-padded with EOS (the
    tokenizer's pad once `tokenizer.pad_token = tokenizer.eos_token`, as GPT-2's users set it)."""
    ids, mask = left_pad([tk.encode(p, add_special=False) for p in prompts], tk.eos_id)
    out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=N_NEW, do_sample=False, **kw)
    return [until_eos(row, tk.eos_id) for row in out[:, ids.shape[1]:].tolist()]


def ours(model, tk, prompts, **kw):
    return [r["tokens"] for r in predict.generate_texts(model, tk, prompts, GenerationSettings(max_new_tokens=N_NEW, **kw))]


@pytest.mark.parametrize("kw", [dict(), dict(repetition_penalty=1.3), dict(num_beams=3), dict(num_beams=4, length_penalty=0.5)],
                         ids=["greedy", "repetition penalty", "3 beams", "4 beams"])
def test_gpt2_without_a_pad_token_generates_transformers_tokens(gpt2, kw):
    hf, model, tk, _ = gpt2
    expected = hf_tokens(hf, tk, PROMPTS, **kw)
    assert ours(model, tk, PROMPTS, greedy=True, **kw) == expected  # the batch, left-padded
    assert [ours(model, tk, [p], greedy=True, **kw)[0] for p in PROMPTS] == expected  # one by one
    if not kw:  # greedy
        assert len(expected[0]) < N_NEW == len(expected[1]), "rows should end at different lengths"


def test_gpt2_without_a_pad_token_samples_streams_and_runs_from_infer(gpt2, capsys):
    hf, model, tk, ckpt = gpt2
    sampled = ours(model, tk, PROMPTS, top_k=20, seed=5)
    assert sampled == ours(model, tk, PROMPTS, top_k=20, seed=5) and all(sampled)
    pieces = []
    streamed = predict.generate_texts(model, tk, PROMPTS[1:2], GenerationSettings(N_NEW, greedy=True), pieces.append)[0]
    assert "".join(pieces) == streamed["text"] and streamed["tokens"] == hf_tokens(hf, tk, PROMPTS[1:2])[0]
    infer.main(["generate", "--ckpt", str(ckpt), "--prompt", PROMPTS[0], "--greedy", "--json", "--max-new-tokens", str(N_NEW)])
    assert json.loads(capsys.readouterr().out)["tokens"] == hf_tokens(hf, tk, PROMPTS[:1])[0]


def test_gpt2_without_a_pad_token_is_served(gpt2):
    hf, model, tk, _ = gpt2
    server = make_server(model, tk, "127.0.0.1", 0, quiet=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def post(body):
        conn = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
        conn.request("POST", "/generate", body=json.dumps({"max_new_tokens": N_NEW, **body}))
        response = conn.getresponse()
        return response.status, response.read().decode()

    try:
        status, body = post({"prompts": PROMPTS, "greedy": True})
        assert status == 200 and [r["tokens"] for r in json.loads(body)["results"]] == hf_tokens(hf, tk, PROMPTS)
        status, body = post({"prompts": PROMPTS, "num_beams": 3})
        assert status == 200 and [r["tokens"] for r in json.loads(body)["results"]] == hf_tokens(hf, tk, PROMPTS, num_beams=3)
        status, body = post({"prompts": PROMPTS, "seed": 1})
        assert status == 200 and len(json.loads(body)["results"]) == 3
        status, body = post({"prompt": PROMPTS[0], "greedy": True, "stream": True})
        events = [json.loads(line[len("data: "):]) for line in body.split("\n\n") if line]
        assert status == 200 and events[-1]["done"] and events[-1]["tokens"] == hf_tokens(hf, tk, PROMPTS[:1])[0]
    finally:
        server.shutdown()
        server.server_close()


# -- a BERT vocab.txt without [PAD] ------------------------------------------------------------------------
WORDS = ["the", "cat", "sat", "on", "mat", "dog", "ran", "a", "park", "##s", "."]
TEXTS = ["the cat sat on the mat.", "a dog", "the dogs ran in a park on the mat"]


def bert_without_pad(tmp_path, name, specials):
    """A transformers BERT saved with a vocab.txt holding `specials` and no [PAD] (nor EOS), converted
    into tmp_path / "minilm" with `minilm.convert --from-hf`, and loaded."""
    cls_name, fields = BERT[name]
    hf = hf_model(cls_name, "BertConfig", **fields, **NO_DROPOUT["bert"], pad_token_id=None)
    vocab = specials + WORDS
    vocab += [f"w{i}" for i in range(hf.config.vocab_size - len(vocab))]
    hf.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "vocab.txt").write_text("\n".join(vocab) + "\n")
    convert.main(["--from-hf", str(tmp_path / "hf"), str(tmp_path / "minilm")])
    model, tk = predict.load(tmp_path / "minilm")
    assert tk.pad_id is None and tk.eos_id is None and tk.fill_id == 0  # id 0 ([UNK] here) fills, hidden by the mask
    return hf, model.eval(), tk


def hf_batch(tk, texts):
    ids = [tk.encode(t) for t in texts]
    T = max(map(len, ids))
    return (torch.tensor([r + [0] * (T - len(r)) for r in ids]),  # (B, T)
            torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in ids]))


def test_bert_without_pad_predicts_fills_and_embeds_a_batch(tmp_path):
    hf, model, tk = bert_without_pad(tmp_path / "cls", "ForSequenceClassification 2L 2H 16d, 3 labels", ["[UNK]", "[CLS]", "[SEP]"])
    ids, mask = hf_batch(tk, TEXTS)
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask).logits.softmax(-1)  # (B, 3)
    got = predict.predict_texts(model, tk, TEXTS, top=3)
    for row, result in zip(expected.tolist(), got):
        assert sorted(row, reverse=True) == pytest.approx([t["probability"] for t in result["top"]], abs=1e-5)
    batched = predict.embed_texts(model, tk, TEXTS)
    alone = torch.cat([predict.embed_texts(model, tk, [t]) for t in TEXTS])
    assert torch.allclose(batched, alone, atol=1e-5)
    hf, model, tk = bert_without_pad(tmp_path / "mlm", "ForMaskedLM 3L 5H 20d, gelu_new, 3 token types, untied",
                                     ["[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    texts = ["the [MASK] sat on the mat.", "a [MASK]"]
    ids, mask = hf_batch(tk, texts)
    with torch.no_grad():
        logits = hf(input_ids=ids, attention_mask=mask).logits  # (B, T, V)
    for row, text, result in zip(range(2), texts, predict.fill_mask(model, tk, texts, top_k=3)):
        position = tk.encode(text).index(tk.mask_id)
        best = logits[row, position].softmax(-1).topk(3)
        assert [m["token"] for m in result["masks"][0]] == [tk.id_to_token(i) for i in best.indices.tolist()]


# -- where a token is truly needed: one clear error -------------------------------------------------------
def word_level(specials, words=("the", "cat", "sat", "dog", "a")) -> Tokenizer:
    """A whitespace word-level tokenizer with only `specials`, first, then `words`."""
    vocab = {t: i for i, t in enumerate([*specials, *words])}
    backend = HFTokenizer(models.WordLevel(vocab, unk_token=specials[0] if specials else None))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.add_special_tokens(list(specials))
    return Tokenizer(backend)


def test_a_missing_mask_token_is_a_clear_error(tmp_path):
    hf, model, tk = bert_without_pad(tmp_path, "ForMaskedLM 3L 5H 20d, gelu_new, 3 token types, untied", ["[UNK]", "[CLS]", "[SEP]"])
    with pytest.raises(ValueError, match=r"fill-mask needs the tokenizer's MASK \(\[MASK\] or <mask>\) token, which it does not"):
        predict.fill_mask(model, tk, ["the [MASK] sat"])


def test_a_vocab_txt_without_cls_or_sep_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"a WordPiece vocabulary needs the \[CLS\], \[SEP\] tokens"):
        Tokenizer.from_vocab(["[UNK]", "the", "cat"])
    with pytest.raises(ValueError, match=r"a WordPiece vocabulary needs the \[SEP\] token"):
        Tokenizer.from_vocab(["[UNK]", "[CLS]", "the", "cat"])


def test_generation_without_bos_eos_or_pad(tmp_path):
    settings = GenerationSettings(max_new_tokens=5, greedy=True)
    tk = word_level(["[UNK]"])  # nothing but [UNK]: a decoder runs every row to max_new_tokens
    model = tiny_model("decoder", vocab_size=tk.vocab_size)
    assert [len(r["tokens"]) for r in predict.generate_texts(model, tk, ["the cat sat", "a"], settings)] == [5, 5]
    assert [len(r["tokens"]) for r in predict.generate_texts(model, tk, ["the cat sat", "a"],
                                                              GenerationSettings(5, num_beams=2))] == [5, 5]
    tk = word_level(["[UNK]", "[BOS]"])  # an encoder-decoder's source without EOS is the text alone
    model = tiny_model("encoder-decoder", vocab_size=tk.vocab_size)
    assert [len(r["tokens"]) for r in predict.generate_texts(model, tk, ["the cat sat", "a"], settings)] == [5, 5]
    with pytest.raises(ValueError, match=r"an encoder-decoder's output \(it starts from BOS\) needs the tokenizer's BOS "
                                         r"\(\[BOS\] or <s> or <\|endoftext\|>\) token, which it does not have"):
        predict.generate_texts(model, word_level(["[UNK]", "[EOS]"]), ["the cat"], settings)


def test_continued_pretraining_of_a_bert_without_pad_or_eos(tmp_path):
    hf, model, tk = bert_without_pad(tmp_path, "ForMaskedLM 3L 5H 20d, gelu_new, 3 token types, untied",
                                     ["[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    lines = ["the cat sat on the mat .", "a dog ran in the park .", "the zebra sat on a dog ."]  # zebra: [UNK], id 0 = the fill
    corpus = TokenizedCorpus([lines * 4], tk)
    for objective in ("mlm", "mlm+nsp"):
        batch = PretrainBatches(corpus, objective, 12, 8).batch(0)
        lengths = batch["attention_mask"].sum(1)
        assert (batch["attention_mask"] == (torch.arange(batch["input_ids"].shape[1]) < lengths[:, None])).all()
        assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()
    (tmp_path / "corpus.txt").write_text("\n".join(lines * 20) + "\n")  # and train.py, from the converted checkpoint
    train.main(["--init", str(tmp_path / "minilm"), "--data", str(tmp_path / "corpus.txt"), "--out", str(tmp_path / "out"),
                "--max-steps", "2", "--eval-every", "2", "--batch-size", "4", "--seq-len", "16", "--val-fraction", "0.2",
                "--eval-batches", "1", "--device", "cpu", "--dtype", "fp32"])
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_objectives_and_tasks_name_the_special_tokens_they_lack():
    tk = word_level(["[UNK]", "[CLS]", "[SEP]", "[MASK]"])  # no BOS, no EOS
    corpus = TokenizedCorpus([["the cat sat", "a dog sat", "the dog"] * 30], tk)
    for objective, roles in [("clm", r"EOS \(\[EOS\] or </s> or <\|endoftext\|>\) token,"),
                             ("denoise", r"BOS \(\[BOS\] or <s> or <\|endoftext\|>\) and EOS \(\[EOS\] or </s> or <\|endoftext\|>\) tokens,")]:
        with pytest.raises(ValueError, match=rf"the {objective} objective needs the tokenizer's {roles} which it does not have"):
            PretrainBatches(corpus, objective, 8, 2)
    with pytest.raises(ValueError, match=r"the mlm objective needs the tokenizer's CLS \(\[CLS\] or <s>\) and MASK"):
        PretrainBatches(TokenizedCorpus([["the cat sat"] * 30], word_level(["[UNK]", "[SEP]"])), "mlm", 8, 2)
    example = Example("the cat", None, "a dog", "x:1")
    with pytest.raises(ValueError, match=r"a generated answer \(it ends with EOS\) needs the tokenizer's EOS"):
        SFTData([example], tk, 16, 1)
    with pytest.raises(ValueError, match=r"an encoder-decoder's output \(it runs from BOS to EOS\) needs the tokenizer's BOS"):
        Seq2SeqData([example], tk, 16, 1)
