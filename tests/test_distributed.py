"""torchrun on CPU (gloo): 2 ranks take the steps of one process with the same global batch, to
within 1e-5 on every weight; a checkpoint written by 2 ranks resumes in one process, and one written
by a single process resumes in 2 FSDP ranks.

Each torchrun here starts 2 Python processes (a few seconds each); the runs are tiny and short.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

import finetune
import train
from test_scripts import TINY, metrics, word_tokenizer, write_corpus, write_task

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="this torch has no gloo backend")

# train.py, leaving the process at the start of step `at` (after the checkpoint of step `at` is written)
STOP_AT = '''
import os, sys
import minilm.training.trainer as trainer
import train

at, argv = int(sys.argv[1]), sys.argv[2:]
real_step = trainer.Trainer.train_step
def train_step(self, batch, lr):
    if self.step == at:
        sys.stdout.flush()
        os._exit(0)
    return real_step(self, batch, lr)
trainer.Trainer.train_step = train_step
train.main(argv)
'''


def run(*command, ranks: int | None = 2):
    """Run a script in fresh processes: under torchrun with `ranks` processes, or plain (None)."""
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)] if ranks else []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, *launcher, *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def assert_same_weights(a: Path, b: Path, tol=1e-5):
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    worst = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    assert worst <= tol, f"largest weight difference {worst:.3g}"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("dist")
    return write_corpus(d / "corpus.txt"), word_tokenizer(d / "tokenizer.json")


def encoder_flags(corpus, out, batch, steps=6):
    text, tok = corpus
    return ["--data", str(text), "--tokenizer", str(tok), "--out", str(out), "--max-steps", str(steps), "--batch-size", str(batch),
            "--grad-accum", "2", "--eval-every", "3", "--save-every", "3", "--warmup", "1", "--eval-batches", "2", "--val-fraction", "0.1", *TINY]


def decoder_flags(corpus, out, batch, steps=6):
    return ["--arch", "decoder", "--objective", "clm", *encoder_flags(corpus, out, batch, steps)]


@pytest.fixture(scope="module")
def one_process_encoder(tmp_path_factory, corpus):
    out = tmp_path_factory.mktemp("one-encoder")
    train.main(encoder_flags(corpus, out, batch=8))
    return out


def test_two_ddp_ranks_take_the_steps_of_one_process(tmp_path, corpus, one_process_encoder):
    """MLM + NSP (its heads called outside model.forward) with 2 accumulation micro-batches per step."""
    out = run("train.py", *encoder_flags(corpus, tmp_path, batch=4))
    assert "global batch 16 = 4 per rank x 2 ranks x 2 accumulation steps (DDP)" in out
    assert out.count("saved ") == 1  # rank 0 alone reports
    assert_same_weights(tmp_path, one_process_encoder)
    for a, b in zip(metrics(tmp_path), metrics(one_process_encoder), strict=True):
        assert a["step"] == b["step"] and abs(a["val_loss"] - b["val_loss"]) < 1e-5 and abs(a["train_loss"] - b["train_loss"]) < 1e-5


def test_a_two_rank_checkpoint_resumes_in_one_process(tmp_path, corpus, one_process_encoder):
    script = tmp_path / "stop_at.py"
    script.write_text(STOP_AT)
    run(str(script), "3", *encoder_flags(corpus, tmp_path / "run", batch=4))
    assert '"step": 3' in (tmp_path / "run" / "checkpoint" / "training_state.json").read_text()
    assert not (tmp_path / "run" / "model.safetensors").exists()  # stopped before the end
    train.main([*encoder_flags(corpus, tmp_path / "run", batch=8), "--resume"])
    assert_same_weights(tmp_path / "run", one_process_encoder)


def test_fsdp_two_ranks_train_and_resume_to_the_weights_of_one_process(tmp_path, corpus):
    one = tmp_path / "one"
    train.main(decoder_flags(corpus, one, batch=8))
    out = run("train.py", *decoder_flags(corpus, tmp_path / "fsdp", batch=4), "--fsdp")
    assert "(FSDP)" in out
    assert_same_weights(tmp_path / "fsdp", one)
    # a single process's checkpoint (Adam moments and all) cut into shards: resumed by 2 FSDP ranks
    script = tmp_path / "stop_at.py"
    script.write_text(STOP_AT)
    run(str(script), "3", *decoder_flags(corpus, tmp_path / "resumed", batch=8), ranks=None)
    run("train.py", *decoder_flags(corpus, tmp_path / "resumed", batch=4), "--fsdp", "--resume")
    assert_same_weights(tmp_path / "resumed", one)


def test_finetune_with_two_ranks_equals_one_process(tmp_path, corpus):
    text, tok = corpus
    enc = tmp_path / "enc"
    train.main(["--data", str(text), "--tokenizer", str(tok), "--objective", "mlm", "--out", str(enc), "--max-steps", "2", "--batch-size", "8", *TINY])
    data = write_task(tmp_path / "train.tsv", 96, seed=1)
    dev = write_task(tmp_path / "dev.tsv", 24, seed=2)
    flags = ["--task", "cls", "--train", str(data), "--dev", str(dev), "--init", str(enc), "--dropout", "0", "--max-steps", "4",
             "--seq-len", "32", "--device", "cpu", "--dtype", "fp32", "--eval-every", "2"]
    finetune.main([*flags, "--batch-size", "8", "--out", str(tmp_path / "one")])
    run("finetune.py", *flags, "--batch-size", "4", "--out", str(tmp_path / "two"))
    assert_same_weights(tmp_path / "two", tmp_path / "one")
    one, two = (finetune_metrics(tmp_path / d) for d in ("one", "two"))
    assert abs(one["dev"]["accuracy"] - two["dev"]["accuracy"]) < 1e-9


def finetune_metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_rows_of_cuts_the_global_batch_without_overlap():
    from minilm.training.distributed import World, rows_of

    batch = {"input_ids": torch.arange(10).view(5, 2)}
    parts = [rows_of(batch, World(rank=r, size=2))["input_ids"] for r in range(2)]
    assert torch.equal(torch.cat(parts), batch["input_ids"]) and [len(p) for p in parts] == [3, 2]
    with pytest.raises(ValueError, match="cannot feed 8 ranks"):
        rows_of(batch, World(rank=0, size=8))
