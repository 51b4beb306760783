"""Kill a training run with SIGKILL at a step, while a checkpoint is being written, and in the
middle of swapping the new checkpoint in; `--resume` must end on weights bit-identical to those
of an uninterrupted run, with the same metrics log.

The run uses dropout, so a resume that did not restore the random generators would differ.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import train
from minilm.tokenizer import Tokenizer
from test_scripts import TINY, metrics, write_corpus

ROOT = Path(__file__).resolve().parent.parent

# Runs train.py in a subprocess that kills itself with SIGKILL at a chosen point.
DRIVER = '''
import os, signal, sys
from pathlib import Path
import minilm.checkpoint as checkpoint
import minilm.training.trainer as trainer
import train

point, at, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
die = lambda: os.kill(os.getpid(), signal.SIGKILL)

if point == "step":  # before the optimizer step that would make step `at` + 1
    real_step = trainer.Trainer.train_step
    def train_step(self, batch, lr):
        if self.step == at:
            die()
        return real_step(self, batch, lr)
    trainer.Trainer.train_step = train_step
elif point == "writing":  # the checkpoint of step `at` half written: model saved, training state not
    real_state = checkpoint.save_state
    def save_state(directory, state):
        if state["step"] == at:
            die()
        real_state(directory, state)
    checkpoint.save_state = save_state
elif point == "swapping":  # the old checkpoint moved aside, the new one not yet in its place
    real_replace = os.replace
    def replace(src, dst):
        real_replace(src, dst)
        new = Path(src).with_name(".checkpoint.tmp") / "training_state.json"
        if Path(dst).name == ".checkpoint.old" and new.exists() and f'"step": {at},' in new.read_text():
            die()
    os.replace = replace
train.main(argv)
'''


def straight_run(d: Path, driver: str, eval_every: int):
    """A tiny corpus and tokenizer in `d`, the uninterrupted run of `args` in d / "straight", and
    `driver` in d / "driver.py": (d, args)."""
    corpus = write_corpus(d / "corpus.txt")
    # one tokenizer for every run: `tokenizers` training is not deterministic across processes
    # (huggingface/tokenizers#1794), and the point here is the resume, not the tokenizer
    Tokenizer.train(corpus.read_text().splitlines(), "wordpiece", 120).save(d / "tokenizer.json")
    args = ["--data", str(corpus), "--max-steps", "24", "--save-every", "3", "--eval-every", str(eval_every), "--batch-size", "8",
            "--dropout", "0.1", "--val-fraction", "0.1", "--eval-batches", "2", "--tokenizer", str(d / "tokenizer.json"), *TINY]
    train.main([*args, "--out", str(d / "straight")])
    (d / "driver.py").write_text(driver)
    return d, args


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return straight_run(tmp_path_factory.mktemp("resume"), DRIVER, eval_every=8)


@pytest.mark.parametrize(
    "point,at,expect_step",
    [("step", 2, None), ("step", 16, 15), ("writing", 9, 6), ("swapping", 12, 9)],
    ids=["before-first-checkpoint", "mid-run", "during-checkpoint-write", "during-checkpoint-swap"],
)
def test_resume_after_sigkill_is_bit_identical(tmp_path, setup, point, at, expect_step):
    d, args = setup
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(d / "driver.py"), point, str(at), *args, "--out", str(out)],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]

    # what the kill left behind, and the checkpoint --resume will take
    from minilm.checkpoint import resolve_checkpoint

    ckpt = resolve_checkpoint(out / "checkpoint")
    state = ckpt / "training_state.json"
    assert (json.loads(state.read_text())["step"] if state.exists() else None) == expect_step
    if point == "writing":
        assert (out / ".checkpoint.tmp" / "model.safetensors").exists() and not (out / ".checkpoint.tmp" / "training_state.json").exists()
    if point == "swapping":
        assert not (out / "checkpoint").exists() and ckpt.name == ".checkpoint.old"

    assert_resume_is_bit_identical(d, args, out)


def assert_resume_is_bit_identical(d: Path, args, out: Path):
    """`--resume` in `out` ends on the weights and the metrics log of the straight run in d."""
    train.main([*args, "--out", str(out), "--resume"])
    a, b = load_file(d / "straight" / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [(r["step"], r["val_loss"]) for r in metrics(out)] == [(r["step"], r["val_loss"]) for r in metrics(d / "straight")]
