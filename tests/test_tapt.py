"""Task-adaptive pretraining (TAPT, Gururangan et al. 2020): `train.py --init CKPT --data <task
files> --text-col COL` continues a checkpoint's MLM pretraining on the unlabeled text of a task,
and `finetune.py --init <that run>` starts from the result. Tiny configs, seconds each."""

import random
import re

import pytest
import torch

import finetune
import train
from minilm.checkpoint import from_pretrained, save_pretrained
from minilm.data.pipeline import corpus_splits
from minilm.data.shards import TokenShards
from minilm.data.tagging import read_conll
from minilm.model.families import build_model
from minilm.tokenizer import Tokenizer
from minilm.training.finetuning import init_model
from test_scripts import TOPICS, corpus, encoder_ckpt, metrics, write_task  # noqa: F401 (corpus, encoder_ckpt: fixtures)

FLAGS = ["--seq-len", "32", "--batch-size", "16", "--lr", "3e-3", "--val-fraction", "0.1", "--eval-batches", "4", "--device", "cpu"]


def write_pairs(path, n, seed):
    """A task file of pairs and no label column at all (an unlabeled test split, say)."""
    rng = random.Random(seed)
    rows = ["text\ttext_b"]
    for _ in range(n):
        topic = rng.choice(sorted(TOPICS))
        rows.append(f"the {' '.join(rng.sample(TOPICS[topic], 3))} here\tand a {topic} there")
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def task_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("task")
    return write_task(d / "train.tsv", 300, seed=1), write_pairs(d / "test.tsv", 100, seed=2)


def tapt(init, out, *data, steps=30, extra=()):
    return train.main(["--init", str(init), "--data", *map(str, data), "--text-col", "text", "--out", str(out),
                       "--max-steps", str(steps), "--eval-every", "10", *FLAGS, *extra])


def test_tapt_continues_the_checkpoint_on_the_task_text(tmp_path, encoder_ckpt, task_files, monkeypatch, capsys):
    start = {}

    class Spy(train.Trainer):  # the weights as training begins
        def fit(self):
            start.update({k: v.detach().clone() for k, v in self.model.state_dict().items()})
            return super().fit()

    monkeypatch.setattr(train, "Trainer", Spy)
    out = tmp_path / "tapt"
    tapt(encoder_ckpt, out, *task_files)
    printed = capsys.readouterr().out
    assert f"initialised from {encoder_ckpt}; new: nothing" in printed
    assert "output bias set" not in printed  # the checkpoint's MLM head keeps its learned bias

    # the checkpoint's tokenizer, byte for byte; its weights, MLM head included, as the starting point
    assert (out / "tokenizer.json").read_bytes() == (encoder_ckpt / "tokenizer.json").read_bytes()
    ckpt = from_pretrained(encoder_ckpt)
    before = ckpt.state_dict()
    assert "mlm.decoder.bias" in start and set(start) <= set(before)
    for name, tensor in start.items():
        assert torch.equal(tensor, before[name]), name
    model = from_pretrained(out)
    assert model.config.head == "mlm" and model.config.n_layer == ckpt.config.n_layer
    assert not torch.equal(model.state_dict()["transformer.blocks.0.attn.q_proj.weight"], before["transformer.blocks.0.attn.q_proj.weight"])

    # the corpus: one document per row of both files, a line each (the pair column was not asked for)
    meta = TokenShards(out / "data", "train").meta
    assert meta["source"]["columns"] == ["text", None]
    docs = sum(s["documents"] for s in meta["splits"].values())
    assert docs == 400 - meta["source"]["dropped"]["duplicates"] and docs > 350
    train_split = TokenShards(out / "data", "train")
    assert train_split.n_lines == train_split.n_docs

    log = metrics(out)
    assert log[-1]["val_loss"] < log[0]["val_loss"] - 0.3, log  # the task's text is new to the checkpoint: much to adapt to

    # the second command of the flow: fine-tuning starts from the adapted backbone
    finetune.main(["--task", "cls", "--init", str(out), "--train", str(task_files[0]), "--max-steps", "2",
                   "--out", str(tmp_path / "cls"), "--device", "cpu"])
    new = re.search(r"initialised from .*; new: (.*)", capsys.readouterr().out).group(1)
    assert new and "transformer." not in new and "classifier." in new


def test_pair_column_rows_are_documents_of_two_lines_and_labels_are_never_read(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"q": "who  wrote it", "a": "a\\u200b poet", "label": null}\n{"q": "where", "a": "here"}\n')
    docs = [doc for split, doc in corpus_splits([path], val_fraction=0.01, columns=["q", "a"])]
    assert docs == [["who wrote it", "a poet"], ["where", "here"]]  # cleaned as any corpus; the labels, null or absent, untouched


def test_a_checkpoint_without_an_mlm_head_gets_a_new_one(tmp_path, encoder_ckpt, task_files, capsys):
    config = from_pretrained(encoder_ckpt).config.replace(head="cls", n_labels=2, labels=["a", "b"])
    model, _ = init_model(config, encoder_ckpt)
    save_pretrained(tmp_path / "cls", model, Tokenizer.load(encoder_ckpt))
    out = tmp_path / "tapt"
    tapt(tmp_path / "cls", out, task_files[0], steps=2, extra=["--seq-len", "64"])
    printed = capsys.readouterr().out
    assert "--seq-len 64 lowered to 32" in printed  # the learned positions of the checkpoint
    assert f"--init {tmp_path / 'cls'} has no mlm head; a new one is trained from random weights" in printed
    assert "output bias set to the log unigram frequencies" in printed
    assert from_pretrained(out).config.max_seq_len == 32


@pytest.fixture(scope="module")
def decoder_dir(tmp_path_factory, encoder_ckpt):
    d = tmp_path_factory.mktemp("dec")
    config = from_pretrained(encoder_ckpt).config.replace(arch="decoder", head="lm", n_segment=0)
    save_pretrained(d, build_model(config), Tokenizer.load(encoder_ckpt))
    return d


@pytest.mark.parametrize("flags, message", [
    (["--vocab-size", "100"], "--vocab-size: --init {init} brings its own tokenizer"),
    (["--tokenizer", "{init}"], "--tokenizer: --init {init} brings its own tokenizer"),
    (["--objective", "mlm+nsp"], "--objective mlm+nsp with --text-col: the rows of task files are independent examples"),
    (["--arch", "decoder"], "--arch decoder: --init {init} is an encoder checkpoint"),
    (["--out", "{init}"], "--out {init} is the --init checkpoint itself"),
])
def test_flags_that_cannot_apply_to_a_checkpoint_are_refused(tmp_path, encoder_ckpt, task_files, flags, message, capsys):
    argv = ["--init", str(encoder_ckpt), "--data", str(task_files[0]), "--text-col", "text", "--out", str(tmp_path), "--max-steps", "2", *FLAGS]
    with pytest.raises(SystemExit):
        train.main(argv + [f.format(init=encoder_ckpt) for f in flags])
    assert message.format(init=encoder_ckpt) in capsys.readouterr().err


def test_a_decoder_checkpoint_cannot_take_the_mlm_objective(tmp_path, decoder_dir, task_files, capsys):
    with pytest.raises(SystemExit):
        train.main(["--init", str(decoder_dir), "--objective", "mlm", "--data", str(task_files[0]), "--text-col", "text", "--out", str(tmp_path),
                    "--max-steps", "2", *FLAGS])
    assert f"--objective mlm trains an encoder; --init {decoder_dir} is a decoder checkpoint" in capsys.readouterr().err


def test_shape_flags_are_refused_with_init(tmp_path, encoder_ckpt, task_files):
    with pytest.raises(SystemExit, match=re.escape("--n-layer changes the architecture; it applies to a new model (no --init) only")):
        tapt(encoder_ckpt, tmp_path, task_files[0], steps=2, extra=["--n-layer", "3"])


@pytest.mark.parametrize("flags, where", [(["--text-col", "sentence"], "'sentence'"), (["--text-pair-col", "text_b"], "'text_b'")])
def test_a_missing_column_names_the_file_line_and_column(tmp_path, encoder_ckpt, task_files, flags, where):
    argv = ["--init", str(encoder_ckpt), "--data", str(task_files[0]), "--text-col", "text", *flags, "--out", str(tmp_path), *FLAGS]
    with pytest.raises(SystemExit, match=re.escape(f"{task_files[0]}:1: no field {where} (found: text, label)")):
        train.main(argv)


def write_conll(path, n, seed):
    """A tagging file (one token and its tag per line, a blank line between sentences)."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(n):
        words = ["the", *rng.sample(TOPICS[rng.choice(sorted(TOPICS))], 3), "here"]
        sentences.append("\n".join(f"{w}\t{'B-x' if k == 1 else 'O'}" for k, w in enumerate(words)))
    path.write_text("\n\n".join(sentences) + "\n")
    return path


def test_conll_files_are_read_as_their_sentences_and_never_their_tags(tmp_path):
    conll = tmp_path / "a.conll"
    conll.write_text("-DOCSTART-\tO\n\nJohn\tB-person\nlives \t O\n\nHi\tO\n")
    conllu = tmp_path / "b.conllu"
    conllu.write_text("# text = Don't go.\n1-2\tDon't\t_\t_\t_\t_\t_\t_\t_\t_\n1\tDo\tdo\tAUX\tVBP\t_\t3\taux\t_\t_\n"
                      "2\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t_\t_\n3\tgo\tgo\tVERB\tVB\t_\t0\troot\t_\t_\n4\t.\t.\tPUNCT\t.\t_\t3\tpunct\t_\t_\n")
    docs = [doc for split, doc in corpus_splits([conll, conllu], val_fraction=0.01)]
    assert docs == [["John lives"], ["Hi"], ["Do n't go ."]]  # each sentence a document, as fine-tuning's words
    assert [doc for split, doc in corpus_splits([conll], val_fraction=0.01, columns=["text", None])] == [["John lives"], ["Hi"]]


def test_tapt_on_a_conll_file(tmp_path, encoder_ckpt):
    data = write_conll(tmp_path / "train.conll", 200, seed=3)
    out = tmp_path / "tapt"
    train.main(["--init", str(encoder_ckpt), "--data", str(data), "--out", str(out), "--max-steps", "20", "--eval-every", "10", *FLAGS])
    split = TokenShards(out / "data", "train")
    assert split.n_lines == split.n_docs and split.n_docs > 100  # one line per sentence
    sentences = {" ".join(s.words) for s in read_conll(data)}
    assert Tokenizer.load(out).decode(split.line(0).tolist()) in sentences  # the words, not the tags
    log = metrics(out)
    assert log[-1]["val_loss"] < log[0]["val_loss"], log
