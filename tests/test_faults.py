"""Faults during training: the disk fills while a checkpoint is written, the output folder becomes
read-only or is removed mid-run, SIGTERM arrives at a step. Whatever happens, the run ends with one
line saying what is on disk (no traceback), the last good checkpoint loads, and `--resume` ends on
weights bit-identical to those of an uninterrupted run.

Disk full is a real size limit (RLIMIT_FSIZE: writes past it fail with EFBIG, as writes to a full
disk fail with ENOSPC); a read-only folder is simulated (this suite may run as root, for whom
permissions do not stop a write): every write under the output folder fails with EACCES.
"""

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import minilm
from minilm.checkpoint import resolve_checkpoint
from test_resume import assert_resume_is_bit_identical, straight_run
from test_scripts import metrics

ROOT = Path(__file__).resolve().parent.parent

# Runs train.py in a subprocess that meets a fault before the optimizer step that makes step `at` + 1.
DRIVER = '''
import builtins, errno, os, resource, shutil, signal, sys
from pathlib import Path
import minilm.training.trainer as trainer
import train

fault, at, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
out = Path(argv[argv.index("--out") + 1]).resolve()

def read_only():
    real_open, real_mkdir = builtins.open, os.mkdir
    def denied(path):
        return OSError(errno.EACCES, "Permission denied", str(path))
    def under_out(path):
        return str(Path(path).resolve()).startswith(str(out))
    def open_(file, mode="r", *a, **k):
        if any(c in mode for c in "wax+") and isinstance(file, (str, os.PathLike)) and under_out(file):
            raise denied(file)
        return real_open(file, mode, *a, **k)
    def mkdir(path, *a, **k):
        if under_out(path):
            raise denied(path)
        return real_mkdir(path, *a, **k)
    builtins.open, os.mkdir = open_, mkdir

real_step = trainer.Trainer.train_step
def train_step(self, batch, lr):
    if self.step == at:
        if fault == "disk-full":  # files may grow no further than this: the next checkpoint does not fit
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, resource.RLIM_INFINITY))
        elif fault == "read-only":
            read_only()
        elif fault == "removed":
            shutil.rmtree(out)
        elif fault == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
    return real_step(self, batch, lr)
trainer.Trainer.train_step = train_step
train.main(argv)
'''


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return straight_run(tmp_path_factory.mktemp("faults"), DRIVER, eval_every=4)


def run_with_fault(d: Path, args, fault: str, at: int, out: Path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(d / "driver.py"), fault, str(at), *args, "--out", str(out)],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)


def last_line(stderr: str) -> str:
    lines = [line for line in stderr.replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1] if lines else ""


@pytest.mark.parametrize("fault", ["disk-full", "read-only"])
def test_a_checkpoint_that_cannot_be_written_stops_the_run_and_keeps_the_last_good_one(tmp_path, setup, fault):
    d, args = setup
    out = tmp_path / "run"
    proc = run_with_fault(d, args, fault, 7, out)  # steps 3 and 6 saved; step 8's metrics or step 9's checkpoint fail
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    reason = "File too large" if fault == "disk-full" else "Permission denied"
    assert last_line(proc.stderr).startswith(f"error: {out}: could not write the ")
    assert f"({reason}); the last good checkpoint, step 6, is intact" in last_line(proc.stderr)
    assert "rerun with --resume" in last_line(proc.stderr)
    ckpt = resolve_checkpoint(out / "checkpoint")
    minilm.from_pretrained(ckpt)  # loads
    assert_resume_is_bit_identical(d, args, out)


def test_an_output_folder_removed_mid_run_is_made_again(tmp_path, setup):
    d, args = setup
    out = tmp_path / "run"
    proc = run_with_fault(d, args, "removed", 10, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"notice: {out} was removed during the run" in proc.stdout
    a, b = load_file(d / "straight" / "model.safetensors"), load_file(out / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # the removal cost the files, not the training
    assert [r["step"] for r in metrics(out)] == [12, 16, 20, 24]  # the log from the removal on


@pytest.mark.parametrize("at", sorted(random.Random(17).sample(range(1, 23), 3)))
def test_sigterm_saves_the_step_and_resume_continues_bit_identically(tmp_path, setup, at):
    d, args = setup
    out = tmp_path / "run"
    proc = run_with_fault(d, args, "sigterm", at, out)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert last_line(proc.stderr) == f"stopped by SIGTERM at step {at + 1}: its checkpoint is in {out / 'checkpoint'}; rerun with --resume to continue"
    state = (resolve_checkpoint(out / "checkpoint") / "training_state.json").read_text()
    assert f'"step": {at + 1},' in state
    assert_resume_is_bit_identical(d, args, out)
