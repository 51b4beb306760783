"""End to end: train.py -> finetune.py -> infer.py on tiny generated data, in seconds.

The corpus has structure a tiny model can pick up quickly: each document is about one topic and
its lines reuse that topic's words, so the losses must fall by clear margins.
"""

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import finetune
import infer
import train
from minilm.checkpoint import from_pretrained
from minilm.data.shards import TokenShards
from minilm.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parent.parent
TOPICS = {
    "animal": "dog cat horse bird fish wolf lion bear deer fox".split(),
    "tool": "hammer saw drill wrench knife axe chisel file plane vise".split(),
    "food": "bread cheese apple rice bean soup cake milk egg meat".split(),
    "place": "city town river hill lake forest valley coast road field".split(),
}
TINY = ["--preset", "tiny", "--seq-len", "32", "--vocab-size", "120", "--device", "cpu", "--dtype", "fp32"]  # fp32: exact comparisons on any CPU


def write_corpus(path: Path, lines_per_doc=40, docs_per_topic=3, seed=0):
    rng = random.Random(seed)
    docs = []
    for topic, words in TOPICS.items():
        for _ in range(docs_per_topic):
            docs.append("\n".join(f"a {topic} like the {' '.join(rng.sample(words, 4))} ." for _ in range(lines_per_doc)))
    rng.shuffle(docs)
    path.write_text("\n\n".join(docs) + "\n")
    return path


def write_task(path: Path, n, seed, pair=False):
    rng = random.Random(seed)
    rows = ["text\tlabel"]
    for _ in range(n):
        topic = rng.choice(sorted(TOPICS))
        rows.append(f"the {' '.join(rng.sample(TOPICS[topic], 3))} here\t{topic}")
    path.write_text("\n".join(rows) + "\n")
    return path


def metrics(out: Path):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt")


def word_tokenizer(path: Path) -> Path:
    """A WordPiece vocabulary of the corpus's words, built, not trained: `tokenizers` training is
    not deterministic across processes (huggingface/tokenizers#1794), and a test that fine-tunes
    on top of a pretrained checkpoint should see the same run every time."""
    from minilm.tokenizer import SPECIAL_TOKENS

    words = {"a", "like", "the", "here", ".", *TOPICS, *(w for ws in TOPICS.values() for w in ws)}
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    Tokenizer.from_vocab([*SPECIAL_TOKENS, *sorted(words - set(letters)), *letters, *("##" + c for c in letters)]).save(path)
    return path


@pytest.fixture(scope="module")
def encoder_ckpt(tmp_path_factory, corpus):
    out = tmp_path_factory.mktemp("enc")
    tok = word_tokenizer(out.parent / "enc-tokenizer.json")
    train.main(["--data", str(corpus), "--out", str(out), "--max-steps", "60", "--eval-every", "20", "--batch-size", "16",
                "--lr", "3e-3", "--val-fraction", "0.1", "--eval-batches", "4", "--tokenizer", str(tok), *TINY])
    return out


@pytest.fixture(scope="module")
def decoder_ckpt(tmp_path_factory, corpus):
    out = tmp_path_factory.mktemp("dec")
    train.main(["--arch", "decoder", "--objective", "clm", "--data", str(corpus), "--out", str(out), "--max-steps", "60",
                "--eval-every", "20", "--batch-size", "16", "--lr", "3e-3", "--val-fraction", "0.1", "--eval-batches", "4", *TINY,
                "--vocab-size", "400"])  # byte-level BPE needs room beyond its 256 bytes to learn whole words
    return out


def test_encoder_mlm_nsp_pretraining_learns(encoder_ckpt):
    log = metrics(encoder_ckpt)
    assert [r["step"] for r in log] == [20, 40, 60]
    # the MLM bias starts at the unigram model (init_output_bias), so the first evaluation is already
    # near it; context must take the loss well below
    assert log[-1]["val_mlm_loss"] < log[0]["val_mlm_loss"] - 0.2, log
    assert log[-1]["val_mlm_loss"] < 3.1  # ln(120) = 4.8: far below guessing over the vocabulary
    assert {"train_loss", "val_loss", "val_ppl", "mlm_accuracy", "nsp_accuracy"} <= set(log[-1])
    for name in ("model.safetensors", "config.json", "tokenizer.json", "checkpoint/training_state.json"):
        assert (encoder_ckpt / name).is_file(), name
    model = from_pretrained(encoder_ckpt)
    assert model.config.head == "mlm+nsp" and model.config.dropout == 0.0


def test_nsp_learns_with_enough_steps(tmp_path, corpus):
    """Next-sentence prediction is slow to start (chance for the first hundred or so steps) but it
    does learn: the topic of segment B tells whether it follows A. The tokenizer is built, the same
    in every process (with some trained vocabularies NSP is still near chance at step 500)."""
    tok = word_tokenizer(tmp_path / "tokenizer.json")
    train.main(["--data", str(corpus), "--out", str(tmp_path / "out"), "--max-steps", "500", "--eval-every", "500", "--batch-size", "32",
                "--lr", "3e-3", "--val-fraction", "0.1", "--eval-batches", "8", "--tokenizer", str(tok), *TINY])
    assert metrics(tmp_path / "out")[-1]["nsp_accuracy"] > 0.8, metrics(tmp_path / "out")


def test_a_corpus_without_blank_lines_trains_nsp_on_pseudo_documents(tmp_path, capsys):
    """One sentence per line, no blank line: the encoder's default mlm+nsp reads consecutive lines
    as pseudo-documents, and says so once."""
    rng = random.Random(1)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"a {t} like the {' '.join(rng.sample(w, 4))} .\n" for t, w in TOPICS.items() for _ in range(40)))
    train.main(["--data", str(corpus), "--out", str(tmp_path / "out"), "--max-steps", "2", "--eval-every", "2", "--batch-size", "4",
                "--val-fraction", "0.1", "--eval-batches", "1", *TINY])
    out = capsys.readouterr().out
    assert out.count("pseudo-documents") == 1 and "notice: the corpus is one document (no blank line" in out
    assert metrics(tmp_path / "out")[-1]["step"] == 2 and "nsp_accuracy" in metrics(tmp_path / "out")[-1]


def test_decoder_clm_pretraining_learns(decoder_ckpt):
    log = metrics(decoder_ckpt)
    assert log[-1]["val_loss"] < log[0]["val_loss"] - 0.3, log
    assert log[-1]["val_ppl"] < 15  # the lines are highly predictable from their topic


def test_encoder_decoder_denoising_learns(tmp_path, corpus):
    train.main(["--arch", "encoder-decoder", "--data", str(corpus), "--out", str(tmp_path), "--max-steps", "40",
                "--eval-every", "5", "--batch-size", "16", "--lr", "3e-3", "--val-fraction", "0.1", "--eval-batches", "4", *TINY])
    log = metrics(tmp_path)
    assert log[-1]["val_loss"] < log[0]["val_loss"] - 1.0, log
    assert from_pretrained(tmp_path).config.arch == "encoder-decoder"


@pytest.mark.parametrize("flags", [
    ["--optimizer", "sgd", "--lr", "0.3", "--momentum", "0.9", "--schedule", "linear"],
    ["--optimizer", "adam", "--schedule", "inverse_sqrt", "--grad-accum", "2", "--grad-checkpointing", "--dtype", "bf16"],
])
def test_pretraining_with_the_engine_flags_learns(tmp_path, corpus, flags):
    train.main(["--arch", "decoder", "--objective", "clm", "--data", str(corpus), "--out", str(tmp_path), "--max-steps", "40",
                "--eval-every", "20", "--batch-size", "8", "--lr", "3e-3", "--val-fraction", "0.1", "--eval-batches", "4", *TINY,
                "--vocab-size", "400", *flags])
    log = metrics(tmp_path)
    assert log[-1]["val_loss"] < log[0]["val_loss"] - 0.3, log
    state = json.loads((tmp_path / "checkpoint" / "training_state.json").read_text())
    assert state["args"]["optimizer"] == flags[1]


def test_bad_training_flags_are_refused(capsys):
    for flags, message in [(["--grad-accum", "0"], "--grad-accum must be positive"),
                           (["--dtype", "fp16", "--device", "cpu"], "--dtype fp16 needs a CUDA device"),
                           (["--min-lr-ratio", "2"], "--min-lr-ratio must lie in [0, 1]")]:
        with pytest.raises(SystemExit):
            train.main(flags)
        assert message in capsys.readouterr().err



@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_cpu_without_bf16_instructions_gets_a_notice(monkeypatch, capsys, native):
    import minilm.cli as cli

    p = argparse.ArgumentParser()
    cli.add_train_args(p, lr=1e-3, batch_size=8, seq_len=64)
    monkeypatch.setattr(cli, "cpu_has_bf16", lambda: native)
    cli.check_train_flags(p, p.parse_args(["--dtype", "bf16", "--device", "cpu"]))
    assert ("no bf16 matrix instructions" in capsys.readouterr().out) is not native

def test_mismatched_arch_and_objective_is_refused(capsys):
    with pytest.raises(SystemExit):
        train.main(["--arch", "decoder", "--objective", "mlm"])
    assert "--objective mlm trains an encoder, not a decoder" in capsys.readouterr().err


def test_missing_corpus_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit, match="nope.txt: no such corpus file"):
        train.main(["--data", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "o"), *TINY])


@pytest.fixture(scope="module")
def task_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("task")
    return write_task(d / "train.tsv", 400, 1), write_task(d / "dev.tsv", 80, 2), write_task(d / "test.tsv", 80, 3)


def test_finetune_cls_from_scratch(tmp_path, task_files, capsys):
    tr, dv, te = task_files
    result = finetune.main(["--init", "scratch", "--train", str(tr), "--dev", str(dv), "--test", str(te), "--out", str(tmp_path),
                            "--epochs", "6", "--lr", "2e-3", "--batch-size", "16", *TINY])
    assert result["test"]["accuracy"] >= 0.9
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert set(saved["dev"]) >= {"accuracy", "macro_f1", "confusion_matrix"} and saved["init"] == "scratch"
    assert saved["labels"] == sorted(TOPICS)
    assert from_pretrained(tmp_path).config.labels == sorted(TOPICS)
    out = capsys.readouterr().out
    assert "dev: accuracy" in out and "test: accuracy" in out


def test_finetune_from_pretrained_encoder(tmp_path, task_files, encoder_ckpt, capsys):
    tr, dv, te = task_files
    result = finetune.main(["--init", str(encoder_ckpt), "--train", str(tr), "--dev", str(dv), "--test", str(te),
                            "--out", str(tmp_path), "--epochs", "6", "--lr", "2e-3", "--batch-size", "16", "--device", "cpu"])
    print(result["test"]["accuracy"])
    out = capsys.readouterr().out
    assert f"initialised from {encoder_ckpt}" in out
    # everything else, the token embedding (stored once with the tied MLM decoder) and the pooler
    # (trained by NSP) included, comes from the checkpoint
    assert f"initialised from {encoder_ckpt}; new: classifier.out.bias, classifier.out.weight\n" in out
    assert result["test"]["accuracy"] >= 0.9
    model = from_pretrained(tmp_path)  # the default head reads [CLS], so the last block computes [CLS] alone
    assert model.config.pooling == "cls" and model.reads_cls_only


def test_finetune_reports_the_dev_scores_of_the_weights_it_saves(tmp_path, task_files, encoder_ckpt):
    """The final dev report is the evaluation of the kept weights made during training, not a
    second pass over dev: it equals scoring the saved model afresh."""
    from minilm.data.tasks import ClassificationData, label_ids, read_examples
    from minilm.training.finetuning import evaluate_task

    tr, dv, _ = task_files
    result = finetune.main(["--init", str(encoder_ckpt), "--train", str(tr), "--dev", str(dv), "--out", str(tmp_path), "--max-steps", "30",
                            "--warmup", "1", "--eval-every", "5", "--lr", "2e-3", "--batch-size", "16", "--device", "cpu", "--dtype", "fp32"])
    assert [r["step"] for r in metrics(tmp_path)] == [5, 10, 15, 20, 25, 30]  # here the best is the first 100%, at step 15
    examples, labels = read_examples(dv), result["labels"]
    data = ClassificationData(examples, Tokenizer.load(tmp_path / "tokenizer.json"), label_ids(examples, labels), 64, 32)
    with torch.no_grad():
        assert evaluate_task("cls", from_pretrained(tmp_path).eval(), data, labels) == result["dev"]


def test_finetune_can_freeze_embeddings_and_lower_layers(tmp_path, task_files, encoder_ckpt, capsys):
    tr, dv, _ = task_files
    finetune.main(["--init", str(encoder_ckpt), "--train", str(tr), "--dev", str(dv), "--out", str(tmp_path),
                   "--max-steps", "20", "--batch-size", "16", "--freeze-embeddings", "--freeze-layers", "1", "--device", "cpu"])
    before, after = from_pretrained(encoder_ckpt).state_dict(), from_pretrained(tmp_path).state_dict()
    frozen = [k for k in after if k.startswith(("transformer.embed.", "transformer.blocks.0."))]
    trained = [k for k in after if k.startswith("transformer.blocks.1.")]
    assert frozen and trained
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert all(not torch.equal(before[k], after[k]) for k in trained if k.endswith("weight"))
    out = capsys.readouterr().out
    assert "trained (" in out and "% )" not in out
    with pytest.raises(SystemExit, match="--freeze-layers 5: the model has 2 blocks"):
        finetune.main(["--init", str(encoder_ckpt), "--train", str(tr), "--out", str(tmp_path / "x"), "--freeze-layers", "5", "--device", "cpu"])


def test_finetune_layer_lr_decay_scales_the_first_update_of_each_depth(tmp_path, task_files, encoder_ckpt, capsys):
    tr, _, _ = task_files
    flags = ["--init", str(encoder_ckpt), "--train", str(tr), "--max-steps", "1", "--batch-size", "16", "--optimizer", "sgd",
             "--momentum", "0", "--schedule", "constant", "--warmup", "0", "--lr", "0.1", "--dtype", "fp32", "--device", "cpu"]
    finetune.main(flags + ["--out", str(tmp_path / "plain")])
    finetune.main(flags + ["--out", str(tmp_path / "decayed"), "--layer-lr-decay", "0.5"])
    before = from_pretrained(encoder_ckpt).state_dict()
    plain, decayed = from_pretrained(tmp_path / "plain").state_dict(), from_pretrained(tmp_path / "decayed").state_dict()
    L = 2  # encoder_ckpt's blocks
    for name, scale in [("transformer.embed.position.weight", 0.5 ** (L + 1)), ("transformer.blocks.0.mlp.fc1.weight", 0.5**L),
                        ("transformer.blocks.1.attn.q_proj.weight", 0.5), ("transformer.norm.weight", 1.0)]:
        step_plain, step_decayed = plain[name] - before[name], decayed[name] - before[name]  # -lr x grad, -lr x scale x grad
        assert step_plain.abs().max() > 0, name
        torch.testing.assert_close(step_decayed, scale * step_plain, rtol=1e-4, atol=1e-7)
    with pytest.raises(SystemExit):
        finetune.main(flags + ["--out", str(tmp_path / "x"), "--layer-lr-decay", "1.5"])
    assert "--layer-lr-decay must lie in (0, 1]" in capsys.readouterr().err


def test_finetune_unknown_dev_label_names_file_and_line(tmp_path, task_files):
    tr, _, _ = task_files
    dev = tmp_path / "dev.tsv"
    dev.write_text("text\tlabel\nthe dog here\tanimal\nthe car here\tvehicle\n")
    with pytest.raises(SystemExit, match=rf"{dev}:3: label 'vehicle' does not occur in the training data"):
        finetune.main(["--init", "scratch", "--train", str(tr), "--dev", str(dev), "--out", str(tmp_path / "o"), *TINY])


def test_finetune_refuses_one_label_and_values_that_are_not_finite(tmp_path):
    single = tmp_path / "single.csv"
    single.write_text("text,label\ngreat,pos\nfine,pos\n")
    with pytest.raises(SystemExit, match=rf"{single}: every row has the label 'pos' in column 'label'; a classifier needs two labels"):
        finetune.main(["--init", "scratch", "--train", str(single), "--out", str(tmp_path / "o"), *TINY])
    for value in ("nan", "inf"):
        scores = tmp_path / "scores.csv"
        scores.write_text(f"text,score\na cat,1.5\na dog,{value}\n")
        with pytest.raises(SystemExit, match=rf"{scores}:3: field 'score' is '{value}', not a finite number"):
            finetune.main(["--task", "regression", "--init", "scratch", "--train", str(scores), "--label-col", "score",
                           "--out", str(tmp_path / "o"), *TINY])


def test_finetune_missing_column_names_file_line_and_field(tmp_path, task_files):
    tr, _, _ = task_files
    with pytest.raises(SystemExit, match=rf"{tr}:1: no field 'sentence'"):
        finetune.main(["--init", "scratch", "--train", str(tr), "--text-col", "sentence", "--out", str(tmp_path), *TINY])


def test_finetune_from_scratch_takes_a_given_tokenizer(tmp_path, task_files, capsys):
    tr, dv, _ = task_files
    tok = word_tokenizer(tmp_path / "tokenizer.json")
    finetune.main(["--init", "scratch", "--tokenizer", str(tok), "--train", str(tr), "--dev", str(dv), "--out", str(tmp_path / "o"),
                   "--max-steps", "2", *TINY])
    assert Tokenizer.load(tmp_path / "o").to_json() == Tokenizer.load(tok).to_json()
    with pytest.raises(SystemExit, match="nope.json"):
        finetune.main(["--init", "scratch", "--tokenizer", str(tmp_path / "nope.json"), "--train", str(tr), "--out", str(tmp_path / "p"), *TINY])
    with pytest.raises(SystemExit):
        finetune.main(["--init", str(tmp_path / "o"), "--tokenizer", str(tok), "--train", str(tr), "--out", str(tmp_path / "q"), *TINY])
    assert "--tokenizer applies with --init scratch only" in capsys.readouterr().err


def test_finetune_regression(tmp_path):
    rng = random.Random(0)
    rows = ["a,b,score"]
    for _ in range(300):
        n = rng.randint(0, 4)
        rows.append(f"{' '.join(['dog'] * n + ['cat'] * (4 - n))},x,{n / 4:.2f}")
    (tmp_path / "r.csv").write_text("\n".join(rows) + "\n")
    result = finetune.main(["--task", "regression", "--init", "scratch", "--train", str(tmp_path / "r.csv"), "--dev", str(tmp_path / "r.csv"),
                            "--text-col", "a", "--label-col", "score", "--out", str(tmp_path / "o"), "--epochs", "4", "--lr", "2e-3", *TINY])
    assert result["dev"]["pearson"] > 0.8


def test_infer_generate(decoder_ckpt, capsys):
    infer.main(["generate", "--ckpt", str(decoder_ckpt), "--prompt", "a food like", "--greedy", "--max-new-tokens", "12", "--json"])
    first = json.loads(capsys.readouterr().out)
    assert set(first) == {"text", "tokens"} and 1 <= len(first["tokens"]) <= 12
    infer.main(["generate", "--ckpt", str(decoder_ckpt), "--prompt", "a food like", "--greedy", "--max-new-tokens", "12", "--json"])
    assert json.loads(capsys.readouterr().out) == first  # greedy is deterministic
    assert any(w in first["text"] for w in TOPICS["food"]), first  # it learned which words go with "food"
    infer.main(["generate", "--ckpt", str(decoder_ckpt), "--prompt", "a tool like", "--prompt", "a", "--seed", "1", "--top-k", "5",
                "--max-new-tokens", "5", "--json"])
    assert len(capsys.readouterr().out.strip().splitlines()) == 2  # one JSON object per prompt
    infer.main(["generate", "--ckpt", str(decoder_ckpt), "--prompt", "a tool like", "--greedy", "--stop", "\n", "--max-new-tokens", "12"])
    assert "\n" not in capsys.readouterr().out.rstrip("\n")  # cut at the stop string
    infer.main(["generate", "--ckpt", str(decoder_ckpt), "--prompt", "a place like", "--greedy", "--stream", "--max-new-tokens", "6"])
    assert capsys.readouterr().out.strip()


def test_infer_predict_and_fill_mask(tmp_path, task_files, encoder_ckpt, capsys):
    tr, dv, _ = task_files
    finetune.main(["--init", "scratch", "--train", str(tr), "--dev", str(dv), "--out", str(tmp_path), "--epochs", "4",
                   "--lr", "2e-3", "--batch-size", "16", *TINY])
    capsys.readouterr()
    infer.main(["predict", "--ckpt", str(tmp_path), "--json", "the hammer saw drill here", "the bread cheese apple here"])
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["label"] for x in lines] == ["tool", "food"]
    assert all(0.0 < x["probability"] <= 1.0 for x in lines)
    infer.main(["predict", "--ckpt", str(tmp_path), "--json", "--quantize", "int8", "the hammer saw drill here", "the bread cheese apple here"])
    int8 = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["label"] for x in int8] == ["tool", "food"]
    assert all(abs(a["probability"] - b["probability"]) < 0.05 for a, b in zip(lines, int8))
    infer.main(["fill-mask", "--ckpt", str(encoder_ckpt), "--json", "a animal like the dog cat [MASK] bird ."])
    masks = json.loads(capsys.readouterr().out)["masks"]
    assert len(masks) == 1 and len(masks[0]) == 5


def test_infer_refuses_the_wrong_kind_of_checkpoint(encoder_ckpt):
    with pytest.raises(SystemExit, match="generate needs a language model"):
        infer.main(["generate", "--ckpt", str(encoder_ckpt), "--prompt", "x"])
    with pytest.raises(SystemExit, match="predict needs a cls, regression or ner checkpoint"):
        infer.main(["predict", "--ckpt", str(encoder_ckpt), "x"])
    with pytest.raises(SystemExit, match="no such checkpoint directory"):
        infer.main(["predict", "--ckpt", "/nonexistent/ckpt", "x"])


def all_actions(parser):
    for action in parser._actions:
        yield parser, action
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from all_actions(sub)


@pytest.mark.parametrize("script", [train, finetune, infer])
def test_help_explains_every_flag(script):
    parser = script.build_parser()
    undocumented = [(p.prog, a.dest) for p, a in all_actions(parser) if not a.help and not isinstance(a, argparse._SubParsersAction)]
    assert undocumented == []
    assert "python " in parser.format_help()  # the runnable examples of the docstring
    out = subprocess.run([sys.executable, script.__file__, "--help"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("usage:")


def test_finetune_refuses_a_checkpoint_that_cannot_take_the_head(tmp_path, task_files):
    from minilm.checkpoint import save_pretrained
    from minilm.config import from_preset
    from minilm.model.families import build_model

    tr, _, _ = task_files
    tokenizer = Tokenizer.train(["a b c"] * 5, "bpe", 300)
    save_pretrained(tmp_path / "t5", build_model(from_preset("tiny", "encoder-decoder", head="lm", vocab_size=tokenizer.vocab_size)), tokenizer)
    with pytest.raises(SystemExit, match="a encoder-decoder checkpoint cannot take a cls head"):
        finetune.main(["--init", str(tmp_path / "t5"), "--train", str(tr), "--out", str(tmp_path / "o")])


def test_finetune_refuses_architecture_flags_with_a_checkpoint(tmp_path, task_files, encoder_ckpt):
    tr, _, _ = task_files
    with pytest.raises(SystemExit, match="--n-layer changes the architecture; it applies to --init scratch only"):
        finetune.main(["--init", str(encoder_ckpt), "--train", str(tr), "--n-layer", "8", "--out", str(tmp_path)])


def test_dtype_auto_is_bf16_only_with_bf16_matrix_instructions(monkeypatch):
    import minilm.cli as cli

    for has, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(cli, "cpu_has_bf16", lambda: has)
        assert cli.auto_dtype(torch.device("cpu")) == expected
        p = argparse.ArgumentParser()
        cli.add_train_args(p, lr=1e-3, batch_size=4, seq_len=8)
        args = p.parse_args(["--device", "cpu"])
        cli.check_train_flags(p, args)
        assert args.dtype == expected


def test_the_held_out_lines_do_not_move_with_seed(tmp_path, corpus):
    """train.py --seed changes weights, data order and masks, not which lines are held out: a run
    that continues another with a new seed keeps its held-out lines (--split-seed moves them)."""
    Tokenizer.train(corpus.read_text().splitlines(), "wordpiece", 120).save(tmp_path / "tok.json")  # one tokenizer for all three
    base = ["--data", str(corpus), "--objective", "mlm", "--max-steps", "1", "--eval-batches", "1", "--tokenizer", str(tmp_path / "tok.json"), *TINY]
    vals = {}
    for name, flags in (("a", ["--seed", "0"]), ("b", ["--seed", "1"]), ("c", ["--seed", "0", "--split-seed", "1"])):
        train.main([*base, *flags, "--out", str(tmp_path / name)])
        vals[name] = TokenShards(tmp_path / name / "data", "val").tokens.tolist()
    assert vals["a"] == vals["b"] and vals["a"] != vals["c"]
