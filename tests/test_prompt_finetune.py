"""Prompt-based fine-tuning (LM-BFF; finetune.py --template --verbalizer): texts go inside the template
with the [MASK] kept whatever the length, a label's logit is the MLM head's score of its word at the
mask (before any training, the zero-shot prompter's scores up to a constant), and fine-tuning through
it learns a task, saves a checkpoint that infer.py predicts with, and names bad verbalisers."""

import json
import random

import pytest
import torch

import finetune
import infer
from conftest import tiny_model
from minilm import from_pretrained
from minilm.checkpoint import save_pretrained
from minilm.data.tasks import ClassificationData, Example, prompt_ids
from minilm.inference.prompting import Prompter
from minilm.interop import save_hf
from minilm.inference.task_outputs import forward_task
from test_prompting import TEMPLATE, tokenizer

TINY = ["--device", "cpu", "--dtype", "fp32"]


def test_prompt_ids_keep_the_template_and_find_its_mask():
    tk = tokenizer()
    ids, positions = prompt_ids(tk, TEMPLATE, ["a good film", "a very very very very good movie", "a [MASK] film"], max_len=10)
    text = [tk.decode(row, skip_special=False) for row in ids]
    assert text[0] == "[CLS] a good film it was [MASK]. [SEP]"
    assert len(ids[1]) == 10 and text[1] == "[CLS] a very very very it was [MASK]. [SEP]"  # the text is cut, not the template
    assert [row[p] for row, p in zip(ids, positions)] == [tk.mask_id] * 3
    assert positions[2] == 6  # the template's mask, after the one the text holds
    first, where = prompt_ids(tk, "[MASK] . {text}", ["a good film"], max_len=10)
    assert where == [1] and tk.decode(first[0], skip_special=False) == "[CLS] [MASK]. a good film [SEP]"
    with pytest.raises(ValueError, match="leaves no room for the text"):
        prompt_ids(tk, TEMPLATE, ["a good film"], max_len=6)


def test_label_logits_are_the_mlm_scores_of_the_words_at_the_mask():
    tk = tokenizer()
    words = {"1": "great", "0": "terrible"}
    model = tiny_model("encoder", "mlm", vocab_size=tk.vocab_size, n_labels=2, labels=["0", "1"], prompt=TEMPLATE,
                       verbalizer_ids=[tk.token_to_id(words["0"]), tk.token_to_id(words["1"])])
    texts = ["a good film", "a very bad movie"]
    data = ClassificationData([Example(t, None, None, "x") for t in texts], tk, None, 40, 8, prompt=TEMPLATE)
    batch = next(iter(data.batches()))
    z = forward_task(model, batch)  # (B, L)
    full = model(batch["input_ids"], batch["attention_mask"])  # (B, T, V)
    rows = torch.arange(2)
    assert torch.allclose(z, full[rows, batch["mask_positions"]][:, model.config.verbalizer_ids], atol=1e-5)
    zero_shot = Prompter(model, tk, TEMPLATE, {"0": "terrible", "1": "great"})  # log p at the mask: the same up to log Z
    for row, text in zip(z, texts):
        s = zero_shot.scores(text)
        assert torch.allclose(row[1] - row[0], torch.tensor(s["1"] - s["0"]), atol=1e-4)


def sentiment(path, n, seed):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice("01")
        rows.append({"text": f"a {rng.choice(['very ', ''])}{'good' if label == '1' else 'bad'} {rng.choice(['film', 'movie'])}", "label": label})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def mlm_checkpoint(tmp_path):
    tk = tokenizer()
    save_pretrained(tmp_path / "mlm", tiny_model("encoder", "mlm", vocab_size=tk.vocab_size), tk)
    return tmp_path / "mlm"


def test_finetune_through_the_template(tmp_path, mlm_checkpoint, capsys):
    sentiment(tmp_path / "train.jsonl", 200, 0)
    sentiment(tmp_path / "dev.jsonl", 40, 1)
    result = finetune.main(["--init", str(mlm_checkpoint), "--train", str(tmp_path / "train.jsonl"), "--dev", str(tmp_path / "dev.jsonl"),
                            "--template", TEMPLATE, "--verbalizer", "1=great,0=terrible", "--out", str(tmp_path / "ft"),
                            "--epochs", "3", "--lr", "3e-3", "--batch-size", "16", *TINY])
    out = capsys.readouterr().out
    assert "new: nothing" in out  # the MLM head is the classifier: nothing is initialised anew
    assert result["dev"]["accuracy"] == 1.0
    model = from_pretrained(tmp_path / "ft")
    assert model.config.prompt == TEMPLATE and model.config.labels == ["0", "1"]
    tk = tokenizer()
    assert model.config.verbalizer_ids == [tk.token_to_id("terrible"), tk.token_to_id("great")]
    infer.main(["predict", "--ckpt", str(tmp_path / "ft"), "a good movie", "a very bad film"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(" (")[0] for line in lines] == ["1", "0"]  # "1 (0.987)\ta good movie"


@pytest.mark.parametrize("verbalizer, message", [
    ("1=great", "give at least two labels"),
    ("1=great,2=terrible", "no word for the label(s) 0"),
    ("1=great,0=film movie", "'film movie' of label 0 is 2 tokens of this tokenizer (film movie)"),
    ("1=great,0=great", "two labels have the same word"),
])
def test_bad_verbalizers_are_named(tmp_path, mlm_checkpoint, verbalizer, message, capsys):
    sentiment(tmp_path / "train.jsonl", 20, 0)
    with pytest.raises(SystemExit) as e:
        finetune.main(["--init", str(mlm_checkpoint), "--train", str(tmp_path / "train.jsonl"), "--template", TEMPLATE,
                       "--verbalizer", verbalizer, "--out", str(tmp_path / "ft"), *TINY])
    assert message in str(e.value.code) + capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--template", TEMPLATE], "--template and --verbalizer come together"),
    (["--template", "{text} it was good", "--verbalizer", "1=a,0=b"], "must hold {text} once (the input) and [MASK] once"),
    (["--template", TEMPLATE, "--verbalizer", "1=a,0=b", "--task", "regression", "--train", "x.tsv"], "--template applies to --task cls on single texts"),
    (["--template", TEMPLATE, "--verbalizer", "1=a,0=b", "--text-pair-col", "b"], "--template applies to --task cls on single texts"),
])
def test_template_flag_errors(flags, message, capsys):
    with pytest.raises(SystemExit):
        finetune.parse_args(flags)
    assert message in capsys.readouterr().err


def test_a_prompt_classifier_converted_to_hugging_face_keeps_its_template(tmp_path, capsys):
    tk = tokenizer()
    ids = [tk.token_to_id("terrible"), tk.token_to_id("great")]
    model = tiny_model("encoder", "mlm", seed=3, vocab_size=tk.vocab_size, norm_position="post", embed_norm=True,  # BERT's shape
                       prompt=TEMPLATE, labels=["0", "1"], n_labels=2, verbalizer_ids=ids)
    save_pretrained(tmp_path / "ours", model, tk)
    save_hf(model, tk, tmp_path / "hf")  # a BertForMaskedLM with the template, labels and words beside its fields
    back = from_pretrained(tmp_path / "hf")
    assert (back.config.prompt, back.config.labels, back.config.verbalizer_ids) == (TEMPLATE, ["0", "1"], ids)
    texts = ["a good movie", "a very bad film", "film"]
    infer.main(["predict", "--ckpt", str(tmp_path / "ours"), *texts, "--json"])
    ours = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    infer.main(["predict", "--ckpt", str(tmp_path / "hf"), *texts, "--json"])
    theirs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in theirs] == [r["label"] for r in ours]
    assert [r["probability"] for r in theirs] == pytest.approx([r["probability"] for r in ours], abs=1e-5)
