"""The bi-encoder (pair_encoding "bi", Sentence-BERT): each text of a pair encoded alone, the two
pooled vectors compared by the head. Shapes, independence of the two texts, the cosine regression's
line, the fine-tuning and prediction commands, and the errors a user can hit."""

import json
import random

import pytest
import torch

import finetune
import infer
from conftest import tiny_model
from minilm.data.tasks import ClassificationData, Example
from minilm.inference import predict
from minilm.inference.task_outputs import forward_task
from minilm.model.heads import pool
from minilm.tokenizer import Tokenizer
from minilm.training.trainer import split_batch
from test_scripts import TINY
from test_serve import request, serving

WORDS = "a dog cat bird runs sleeps the big small red".split()


@pytest.fixture(scope="module")
def tk():
    return Tokenizer.from_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])


def pairs(n, seed=0):
    rng = random.Random(seed)
    return [Example(" ".join(rng.choices(WORDS, k=rng.randint(1, 6))), " ".join(rng.choices(WORDS, k=rng.randint(1, 6))),
                    None, f"row {i}") for i in range(n)]


def model_for(tk, head, n_labels=0):
    return tiny_model("encoder", head, vocab_size=tk.vocab_size, pair_encoding="bi", n_labels=n_labels, pooling="mean")


@pytest.mark.parametrize("head, n_labels, shape", [("regression", 0, (5,)), ("cls", 3, (5, 3))])
def test_shapes(tk, head, n_labels, shape):
    data = ClassificationData(pairs(5), tk, None, 16, 5, pair_encoding="bi")
    batch = next(data.batches())
    assert batch["input_ids"].shape[0] == batch["pair_input_ids"].shape[0] == 5 and "segment_ids" not in batch
    assert forward_task(model_for(tk, head, n_labels), batch).shape == shape


def test_each_text_is_encoded_alone(tk):
    """A pair's output is the head applied to each text's own vector: neither the other text, nor the
    other rows, nor the padding of the batch changes it."""
    model = model_for(tk, "regression")
    examples = pairs(4, seed=1)
    together = forward_task(model, next(ClassificationData(examples, tk, None, 16, 4, pair_encoding="bi").batches()))

    def vector(text):
        ids = torch.tensor([tk.encode(text)])  # (1, t): no padding at all
        return pool(model.hidden(ids), None, "mean")  # (1, C)

    for i, e in enumerate(examples):
        alone = model.classifier(vector(e.text), vector(e.pair))
        torch.testing.assert_close(together[i : i + 1], alone, atol=1e-5, rtol=1e-5)


def test_regression_is_a_line_in_the_cosine(tk):
    model = model_for(tk, "regression")
    model.classifier.fit_range(0.0, 5.0)
    u, v = torch.randn(4, 32), torch.randn(4, 32)
    expected = 5.0 * torch.nn.functional.cosine_similarity(u, v, dim=-1)
    torch.testing.assert_close(model.classifier(u, v), expected)
    torch.testing.assert_close(model.classifier(u, u), torch.full((4,), 5.0))  # a text against itself: the top of the range


def test_micro_batches_keep_the_pairs_together(tk):
    data = ClassificationData(pairs(6, seed=2), tk, [0.0] * 6, 16, 6, pair_encoding="bi")
    batch = next(data.batches())
    model = model_for(tk, "regression")
    whole = forward_task(model, batch)
    parts = split_batch(batch, 3)
    assert all(p["pair_input_ids"].shape[1] == int(p["pair_attention_mask"].sum(1).max()) for p in parts)  # each trimmed to its own longest
    torch.testing.assert_close(torch.cat([forward_task(model, p) for p in parts]), whole, atol=1e-5, rtol=1e-5)


def test_a_bi_encoder_needs_pairs_and_an_encoder(tk):
    with pytest.raises(ValueError, match="row 0: a bi-encoder .* no second text"):
        ClassificationData([Example("a dog", None, None, "row 0")], tk, None, 16, 1, pair_encoding="bi")
    with pytest.raises(ValueError, match="pair_encoding='bi' .* needs an encoder"):
        tiny_model("decoder", "regression", pair_encoding="bi")
    with pytest.raises(ValueError, match="pair_encoding"):
        tiny_model("encoder", "cls", n_labels=2, pair_encoding="siamese")


def write_pairs(path, n=400, seed=0):
    """Pairs of animal words whose score is how many of the four words they share (0-4): a similarity
    that the bag of each text alone decides."""
    rng = random.Random(seed)
    rows = ["a\tb\tscore"]
    for _ in range(n):
        a = rng.sample(WORDS[1:4] + WORDS[6:], 4)
        shared = rng.randint(0, 4)
        rest = [w for w in WORDS[1:] if w not in a]
        b = a[:shared] + rng.sample(rest, 4 - shared)
        rows.append(f"{' '.join(a)}\t{' '.join(rng.sample(b, 4))}\t{shared}")
    path.write_text("\n".join(rows) + "\n")


def test_finetune_and_predict_a_bi_encoder(tmp_path, capsys):
    write_pairs(tmp_path / "train.tsv")
    write_pairs(tmp_path / "dev.tsv", n=100, seed=1)
    out = tmp_path / "bi"
    result = finetune.main(["--task", "regression", "--init", "scratch", "--train", str(tmp_path / "train.tsv"), "--dev", str(tmp_path / "dev.tsv"),
                            "--text-col", "a", "--text-pair-col", "b", "--label-col", "score", "--pair-encoding", "bi",
                            "--out", str(out), "--epochs", "6", "--lr", "2e-3", *TINY])
    assert result["dev"]["pearson"] > 0.9, result["dev"]  # 0.998 seen; the cross-encoder reaches 0.55 on these data
    config = json.loads((out / "config.json").read_text())
    assert config["pair_encoding"] == "bi" and config["pooling"] == "mean"  # a bi-encoder's default pooling, as Sentence-BERT
    capsys.readouterr()
    infer.main(["predict", "--ckpt", str(out), "--pair", "dog cat bird red", "dog cat bird red", "the big small runs", "--json"])
    same, other = (json.loads(line)["value"] for line in capsys.readouterr().out.splitlines())
    assert same > other + 1.0, (same, other)
    with pytest.raises(SystemExit, match="compares text pairs .* --pair"):
        infer.main(["predict", "--ckpt", str(out), "dog cat"])
    model, tk = predict.load(out)  # `infer.py embed` gives the vectors the head compares
    u, v = predict.embed_texts(model, tk, ["dog cat bird red", "the big small runs"])
    head = model.classifier
    assert float((head.scale * (u @ v) + head.shift).detach()) == pytest.approx(other, abs=1e-3)
    served = serving(out)
    server, _, _ = next(served)
    status, _, body = request(server, "POST", "/predict", {"text": "dog cat bird red", "pair": "dog cat bird red"})
    assert status == 200 and json.loads(body)["value"] == pytest.approx(same, abs=1e-3)
    status, _, body = request(server, "POST", "/predict", {"text": "dog cat"})
    assert status == 400 and 'give "pair"' in json.loads(body)["error"], body
    next(served, None)


def test_finetune_refuses_bi_without_pairs(tmp_path, capsys):
    write_pairs(tmp_path / "train.tsv", n=20)
    with pytest.raises(SystemExit):
        finetune.main(["--task", "regression", "--init", "scratch", "--train", str(tmp_path / "train.tsv"), "--text-col", "a",
                       "--label-col", "score", "--pair-encoding", "bi", *TINY])
    assert "--pair-encoding bi compares the two texts of a pair" in capsys.readouterr().err
