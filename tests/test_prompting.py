"""Prompting without updates (minilm/inference/prompting.py, `infer.py classify`): each label's score
is the log-likelihood its verbaliser would get written out by hand, for an MLM encoder and for a
decoder; demonstrations and over-long texts are cut to fit; calibration subtracts the content-free
scores; the command prints metrics beside the majority class."""

import json
import string

import pytest
import torch

import infer
from conftest import tiny_model
from minilm.checkpoint import save_pretrained
from minilm.inference.prompting import CONTENT_FREE, Prompter, parse_verbalizers, sample_demonstrations
from minilm.tokenizer import SPECIAL_TOKENS, Tokenizer

WORDS = ["it", "was", "great", "terrible", "film", "a", "good", "bad", "n", "/", "movie", "very", "."]
LETTERS = list(string.ascii_lowercase)
TEMPLATE = "{text} it was [MASK] ."
LABELS = {"1": "great", "0": "terrible"}


def tokenizer() -> Tokenizer:
    return Tokenizer.from_vocab([*SPECIAL_TOKENS, *WORDS, *[c for c in LETTERS if c not in WORDS], *("##" + c for c in LETTERS)])


def models(tk, **changes):
    v = tk.vocab_size
    return {"mlm": tiny_model("encoder", "mlm", vocab_size=v, **changes), "lm": tiny_model("decoder", "lm", vocab_size=v, **changes)}


def test_verbalisers_and_templates_are_checked():
    assert parse_verbalizers("1=great, 0=terrible") == {"1": "great", "0": "terrible"}
    for bad in ("1=great", "1:great,0=bad", "1=great,1=good", "1=,0=bad"):
        with pytest.raises(ValueError, match="--labels"):
            parse_verbalizers(bad)
    tk = tokenizer()
    for template in ("{text} it was .", "it was [MASK] .", "{text} [MASK] [MASK]"):
        with pytest.raises(ValueError, match="--template"):
            Prompter(models(tk)["mlm"], tk, template, LABELS)
    with pytest.raises(ValueError, match="an MLM encoder"):
        Prompter(tiny_model("encoder", "cls", vocab_size=tk.vocab_size, n_labels=2), tk, TEMPLATE, LABELS)


def test_mlm_scores_are_the_log_likelihood_at_the_masks():
    tk = tokenizer()
    model = models(tk)["mlm"]
    labels = {"1": "great", "0": "terrible", "2": "very good"}  # a two-token verbaliser takes two masks
    got = Prompter(model, tk, TEMPLATE, labels).scores("a good film")
    for y, word in labels.items():
        pieces = tk.encode(word, add_special=False)
        ids = tk.encode("a good film it was " + " ".join(["[MASK]"] * len(pieces)) + " .")
        at = [i for i, t in enumerate(ids) if t == tk.mask_id]
        with torch.no_grad():
            logp = model(torch.tensor([ids]))[0].log_softmax(-1)  # (T, V)
        assert got[y] == pytest.approx(sum(float(logp[i, p]) for i, p in zip(at, pieces)), abs=1e-5)
    normalized = Prompter(model, tk, TEMPLATE, labels, normalize=True).scores("a good film")
    assert normalized["2"] == pytest.approx(got["2"] / 2, abs=1e-5) and normalized["1"] == pytest.approx(got["1"], abs=1e-5)


@pytest.mark.parametrize("kind", ["mlm", "lm"])
def test_texts_scored_together_score_as_each_alone(kind):
    tk = tokenizer()
    model = models(tk)[kind].eval()
    labels = {"1": "great", "0": "very bad", "2": "good"}
    demos = [("a bad movie", "0"), ("a very good film", "1")]
    texts = ["a good film", "bad", "a very very good movie it was n / a", "film", CONTENT_FREE]
    p = Prompter(model, tk, TEMPLATE, labels, demos)
    alone = [p.scores(t) for t in texts]
    for budget in (4096, 3 * 40):  # all rows in one batch; a few rows per batch
        together = p.score_texts(texts, budget=budget)
        for a, b in zip(alone, together):
            assert b == pytest.approx(a, abs=1e-5)
    assert [r["label"] for r in p.classify(texts, batch=2)] == [max(a, key=a.get) for a in alone]


def test_decoder_scores_are_the_log_likelihood_of_the_words_after_the_prefix():
    tk = tokenizer()
    model = models(tk)["lm"]
    labels = {"1": "great", "0": "very bad", "2": "terrible"}
    p = Prompter(model, tk, TEMPLATE, labels)
    got = p.scores("a good film")
    prefix = tk.encode("a good film it was", add_special=False)
    rows = p.requests("a good film")  # the one-token words share the prefix's row; "very bad" has its own
    assert [(ids, sorted(items)) for ids, items in rows] == [(prefix, ["1", "2"]), (prefix + tk.encode("very bad", add_special=False), ["0"])]
    for y, word in labels.items():
        ids = prefix + tk.encode(word, add_special=False)
        with torch.no_grad():
            logp = model(torch.tensor([ids]))[0].log_softmax(-1)  # (T, V), alone: no padding
        assert got[y] == pytest.approx(sum(float(logp[t - 1, ids[t]]) for t in range(len(prefix), len(ids))), abs=1e-5)


@pytest.mark.parametrize("kind", ["mlm", "lm"])
def test_demonstrations_come_first_and_are_dropped_before_the_text_is_cut(kind):
    tk = tokenizer()
    model = models(tk, max_seq_len=24)[kind]
    demos = [("a bad movie", "0"), ("a good film", "1")]
    p = Prompter(model, tk, TEMPLATE, LABELS, demos)
    sep = " " if kind == "mlm" else "\n"
    assert p.prompt("very good", 1) == f"a bad movie it was terrible .{sep}a good film it was great .{sep}very good it was [MASK] ."
    longer = "a very very very very very good film"
    assert p.prompt(longer, 1) == f"a good film it was great .{sep}{longer} it was [MASK] ."  # the oldest went
    long = " ".join(["very"] * 30) + " good"
    cut = p.prompt(long, 1)
    assert cut.startswith("very very") and cut.endswith(" it was [MASK] .") and "great" not in cut
    assert set(p.scores(long)) == set(LABELS)  # and it scores
    with pytest.raises(ValueError, match="no word for"):
        Prompter(model, tk, TEMPLATE, {"1": "great", "2": "good"}, demos)


def test_calibration_subtracts_the_content_free_scores():
    tk = tokenizer()
    for model in models(tk).values():
        raw = Prompter(model, tk, TEMPLATE, LABELS).classify(["a good film", CONTENT_FREE])
        cal = Prompter(model, tk, TEMPLATE, LABELS, calibrate=True).classify(["a good film", CONTENT_FREE])
        assert cal[1]["scores"] == {"1": 0.0, "0": 0.0}
        prior = raw[1]["scores"]
        assert cal[0]["scores"] == pytest.approx({y: raw[0]["scores"][y] - prior[y] for y in LABELS})


def test_sample_demonstrations_is_seeded():
    class E:
        def __init__(self, i):
            self.text, self.label = f"t{i}", str(i % 2)

    examples = [E(i) for i in range(10)]
    assert sample_demonstrations(examples, 4, seed=3) == sample_demonstrations(examples, 4, seed=3)
    assert sample_demonstrations(examples, 4, seed=3) != sample_demonstrations(examples, 4, seed=4)
    with pytest.raises(ValueError, match="only 10"):
        sample_demonstrations(examples, 11)


def test_infer_classify_prints_predictions_or_metrics(tmp_path, capsys):
    tk = tokenizer()
    ckpt = tmp_path / "enc"
    save_pretrained(ckpt, models(tk)["mlm"], tk)
    data = tmp_path / "dev.tsv"
    data.write_text("sentence\tlabel\na good film\t1\na bad movie\t0\nvery bad\t0\n")
    base = ["classify", "--ckpt", str(ckpt), "--template", TEMPLATE, "--labels", "1=great,0=terrible"]
    infer.main([*base, "a good film", "--json"])
    row = json.loads(capsys.readouterr().out)
    assert row["text"] == "a good film" and row["label"] in LABELS and set(row["scores"]) == set(LABELS)
    infer.main([*base, "--file", str(data), "--text-col", "sentence", "--label-col", "label", "--json",
                "--shots", str(data), "--shots-label-col", "label", "--k", "2", "--calibrate"])
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 3 and report["majority_label"] == "0" and report["majority_accuracy"] == pytest.approx(2 / 3)
    assert 0 <= report["accuracy"] <= 1 and len(report["confusion_matrix"]) == 2
    with pytest.raises(SystemExit, match=r"dev.tsv:3: label '0' has no word in --labels .*2 rows"):
        infer.main([*base, "--file", str(data), "--text-col", "sentence", "--label-col", "label", "--labels", "1=great,2=terrible"])
    shots = tmp_path / "shots.tsv"
    shots.write_text("sentence\tlabel\ngreat\t1\nawful\t0\nfine\tmaybe\n")
    with pytest.raises(SystemExit, match=r"shots.tsv:4: label 'maybe' has no word"):
        infer.main([*base, "--file", str(data), "--text-col", "sentence", "--shots", str(shots), "--shots-label-col", "label"])
    with pytest.raises(SystemExit, match="no field 'text'"):
        infer.main([*base, "--file", str(data)])


def test_a_converted_hugging_face_mlm_scores_as_transformers_does(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *[c for c in LETTERS if c not in WORDS], *("##" + c for c in LETTERS)]
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                                     max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    hf = transformers.BertForMaskedLM(config).eval()
    hf.save_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    reference = transformers.BertTokenizer(str(tmp_path / "vocab.txt"))

    from minilm.inference import predict

    model, tk = predict.load(tmp_path)
    texts = ["a good film", "bad", "a very bad movie"]
    got = Prompter(model, tk, TEMPLATE, LABELS).score_texts(texts)
    for text, scores in zip(texts, got):
        enc = reference(TEMPLATE.format(text=text), return_tensors="pt")
        with torch.no_grad():
            logp = hf(**enc).logits[0].log_softmax(-1)  # (T, V)
        at = int((enc["input_ids"][0] == reference.mask_token_id).nonzero()[0, 0])
        for label, word in LABELS.items():
            assert scores[label] == pytest.approx(float(logp[at, reference.convert_tokens_to_ids(word)]), abs=1e-4)
    infer.main(["classify", "--ckpt", str(tmp_path), "--template", TEMPLATE, "--labels", "1=great,0=terrible", *texts, "--json"])
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in printed] == [max(s, key=s.get) for s in got]
