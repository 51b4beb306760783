"""The training loop: exact gradient accumulation, activation checkpointing, bf16, NaN stop,
schedules, optimizers and TensorBoard logging, on tiny models in seconds."""

import copy
import json

import pytest
import torch

from conftest import tiny_config
from minilm.model.families import build_model
from minilm.objectives import IGNORE_INDEX
from minilm.optim import lr_at
from minilm.training.pretraining import pretraining_loss, pretraining_targets
from minilm.training.trainer import TrainArgs, Trainer, TrainingDiverged, split_batch


class RaggedMLM:
    """MLM+NSP batches whose rows have random lengths (right padding) and random masked positions,
    so micro-batches differ in padding and in their number of targets."""

    def __init__(self, rows=16, T=20, seed=0, learnable=False):
        self.rows, self.T, self.seed, self.learnable = rows, T, seed, learnable

    def batch(self, step):
        g = torch.Generator().manual_seed(self.seed * 1000 + step)
        lengths = torch.randint(3, self.T + 1, (self.rows,), generator=g)
        mask = (torch.arange(self.T) < lengths[:, None]).long()  # (B, T)
        ids = torch.randint(5, 53, (self.rows, self.T), generator=g) * mask
        chosen = (torch.rand(self.rows, self.T, generator=g) < 0.3) & mask.bool()
        chosen[:, 0] = True  # at least one target per row
        targets = ids if self.learnable else torch.randint(5, 53, (self.rows, self.T), generator=g)
        labels = torch.where(chosen, targets, IGNORE_INDEX)  # learnable: predict the token itself
        segments = ((torch.arange(self.T) >= lengths[:, None] // 2) & mask.bool()).long()
        nsp = ids[:, 0] % 2 if self.learnable else torch.randint(0, 2, (self.rows,), generator=g)
        return {"input_ids": ids, "attention_mask": mask, "segment_ids": segments, "labels": labels, "nsp_labels": nsp}


def encoder(seed=0, **changes):
    torch.manual_seed(seed)
    return build_model(tiny_config("encoder", "mlm+nsp", **changes))


def trainer(tmp_path, model, data, **args):
    settings = TrainArgs(out=str(tmp_path), **{"max_steps": 4, "eval_every": 1000, "save_every": 1000, "warmup": 1, **args})
    return Trainer(model, None, data, pretraining_loss("mlm+nsp"), pretraining_targets("mlm+nsp"), lambda m: {}, settings)


def rel_diff(a, b):
    """||theta_a - theta_b|| / ||theta_b|| over all parameters as one vector (the key biases have
    zero gradient, so they hold ~1e-12 rounding noise that a per-tensor ratio would blow up)."""
    flat = [torch.cat([p.detach().flatten() for p in m.parameters()]) for m in (a, b)]
    return ((flat[0] - flat[1]).norm() / flat[1].norm()).item()


def test_micro_batches_differ_in_padding_and_targets():
    micro = split_batch(RaggedMLM().batch(0), 4)
    assert len({mb["input_ids"].shape[1] for mb in micro}) > 1  # each cut to its own longest row
    assert len({int((mb["labels"] != IGNORE_INDEX).sum()) for mb in micro}) > 1


def flat_grad(model):
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize("step", range(3))
def test_four_micro_batches_give_the_gradient_of_one_batch(tmp_path, step):
    """The trainer's accumulated gradient over 4 micro-batches of 4 rows equals that of the one
    batch of 16 rows (relative difference of the whole gradient <= 1e-6), and so does the loss."""
    batch = RaggedMLM().batch(step)
    full, accum = encoder(), encoder()
    loss_full = trainer(tmp_path / "f", full, None, grad_clip=0).train_step(batch, lr=0.0)
    loss_accum = trainer(tmp_path / "a", accum, None, grad_clip=0, grad_accum=4).train_step(batch, lr=0.0)
    g_full, g_accum = flat_grad(full), flat_grad(accum)
    assert ((g_accum - g_full).norm() / g_full.norm()).item() <= 1e-6
    assert loss_accum == pytest.approx(loss_full, rel=1e-6)


def test_four_micro_batches_train_like_one_batch(tmp_path):
    """Over 4 SGD steps with momentum the weights agree within 1e-6 (SGD is linear in the
    gradient; Adam divides by sqrt(v) and magnifies rounding in parameters whose gradient is ~0,
    such as the key bias, which softmax ignores)."""
    data = RaggedMLM()
    full, accum = encoder(), encoder()
    trainer(tmp_path / "full", full, data, optimizer="sgd", lr=0.1).fit()
    trainer(tmp_path / "accum", accum, data, optimizer="sgd", lr=0.1, grad_accum=4).fit()
    assert rel_diff(accum, full) <= 1e-6
    assert rel_diff(full, encoder()) > 1e-3  # training moved the weights


def test_a_mean_of_micro_batch_means_would_differ():
    """The control for the test above: averaging per-micro-batch losses (the usual bug) changes the
    gradient by far more than the 1e-6 the exact accumulation is held to."""
    batch = RaggedMLM().batch(0)
    loss_fn, targets = pretraining_loss("mlm+nsp"), pretraining_targets("mlm+nsp")

    def grads(losses):
        model = encoder()
        sum(losses(model)).backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    def mean_of_means(model):
        for mb in split_batch(batch, 4):
            yield sum(s / n for s, n in loss_fn(model, mb).values()) / 4

    def full(model):
        yield sum(s / n for s, n in loss_fn(model, batch).values())

    assert targets(batch)["mlm"] == int((batch["labels"] != IGNORE_INDEX).sum())
    g_full, g_naive = grads(full), grads(mean_of_means)
    assert ((g_naive - g_full).norm() / g_full.norm()).item() > 1e-2


def test_gradient_checkpointing_gives_the_same_gradients():
    """With dropout on: the recomputed forward replays the same dropout masks."""
    batch = RaggedMLM().batch(1)
    loss_fn = pretraining_loss("mlm+nsp")
    out = []
    for on in (False, True):
        model = encoder(dropout=0.1, attn_dropout=0.1).train()
        for m in model.modules():
            if hasattr(m, "grad_checkpointing"):
                m.grad_checkpointing = on
        torch.manual_seed(5)
        sum(s / n for s, n in loss_fn(model, batch).values()).backward()
        out.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    for a, b in zip(*out):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_bf16_autocast_tracks_fp32(tmp_path):
    """bf16 autocast keeps within 5% of the fp32 held-out loss at every evaluation of a run that
    learns (the note of the training-engine issue states the gap on real data)."""
    data = RaggedMLM(learnable=True)
    runs = {}
    for dtype in ("fp32", "bf16"):
        model = encoder()
        t = trainer(tmp_path / dtype, model, data, max_steps=60, lr=3e-3, dtype=dtype, eval_every=10)
        t.evaluate_fn = lambda m: {"val_loss": sum(s.item() / n for s, n in pretraining_loss("mlm+nsp")(m, data.batch(999)).values())}
        t.fit()
        runs[dtype] = [r["val_loss"] for r in t.history]
        assert all(p.dtype == torch.float32 for p in model.parameters())  # fp32 master weights
    assert runs["fp32"][-1] < 0.6 * runs["fp32"][0], runs  # the run learned
    for a, b in zip(runs["fp32"], runs["bf16"]):
        assert abs(a - b) < 0.05 * a, runs


def test_a_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    model = encoder()
    t = trainer(tmp_path, model, RaggedMLM(), max_steps=10, save_every=2)
    real = t.loss_fn

    def poisoned(m, b):
        parts = real(m, b)
        if t.step == 5:
            parts["mlm"] = (parts["mlm"][0] * float("nan"), parts["mlm"][1])
        return parts

    t.loss_fn = poisoned
    with pytest.raises(TrainingDiverged, match="step 5: the loss is nan.*last good checkpoint"):
        t.fit()
    state = json.loads((tmp_path / "checkpoint" / "training_state.json").read_text())
    assert state["step"] == 4


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine", "inverse_sqrt"])
def test_the_loop_follows_the_schedule(tmp_path, schedule):
    t = trainer(tmp_path, encoder(), RaggedMLM(), max_steps=8, warmup=3, eval_every=1, schedule=schedule, lr=0.01)
    t.fit()
    assert [r["lr"] for r in t.history] == [lr_at(schedule, s, 0.01, 3, 8, 0.1) for s in range(8)]


def test_tensorboard_events(tmp_path):
    pytest.importorskip("tensorboard")  # a dev dependency (setup.py); users without it get a clear error
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    t = trainer(tmp_path, encoder(), RaggedMLM(), max_steps=4, eval_every=2, tensorboard=True)
    t.evaluate_fn = lambda m: {"val_loss": 1.5}
    t.fit()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"train/loss", "train/lr", "train/tokens_per_s", "eval/val_loss"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]
    assert [e.value for e in events.Scalars("eval/val_loss")] == [1.5, 1.5]


def test_fp16_loss_scaling_skips_overflowing_steps_then_trains(tmp_path):
    """fp16 autocast (run here on the CPU, which autocasts fp16 too) with a loss scale so large
    that the fp16 gradients overflow: those steps change no weight and halve the scale, then the
    run trains and tracks fp32."""
    data = RaggedMLM(learnable=True)
    model = encoder()
    t = trainer(tmp_path / "fp16", model, data, max_steps=40, lr=3e-3, dtype="fp16", eval_every=10)
    t.scaler.scale = 2.0**40
    before = copy.deepcopy(model)
    t.train_step(data.batch(0), lr=3e-3)
    assert t.scaler.scale == 2.0**39 and rel_diff(model, before) == 0.0  # skipped
    for _ in range(40):  # each overflow halves the scale, until the fp16 gradients are finite
        t.train_step(data.batch(0), lr=3e-3)
        if t.scaler.good_steps:
            break
    assert t.scaler.good_steps == 1 and t.scaler.scale < 2.0**39 and rel_diff(model, before) > 0

    runs = {}
    for dtype in ("fp32", "fp16"):
        t = trainer(tmp_path / dtype, encoder(), data, max_steps=40, lr=3e-3, dtype=dtype, eval_every=10)
        t.evaluate_fn = lambda m: {"val_loss": sum(s.item() / n for s, n in pretraining_loss("mlm+nsp")(m, data.batch(999)).values())}
        t.fit()
        runs[dtype] = [r["val_loss"] for r in t.history]
    for a, b in zip(runs["fp32"], runs["fp16"]):
        assert abs(a - b) < 0.05 * a, runs


def test_a_resumed_run_takes_its_own_optimizer_path_not_the_checkpoints(tmp_path):
    """A checkpoint saved with --compile (foreach="compiled") resumed without it runs the foreach path."""
    first = trainer(tmp_path, encoder(), RaggedMLM(), max_steps=2, save_every=2, compile=True)
    first.fit()
    assert {g["foreach"] for g in first.optimizer.param_groups} == {"compiled"}
    again = trainer(tmp_path, encoder(), RaggedMLM(), max_steps=3, resume=True)
    assert again.try_resume() and again.step == 2
    assert {g["foreach"] for g in again.optimizer.param_groups} == {True}


def test_ranks_after_the_first_draw_their_own_dropout_masks():
    from minilm.training.distributed import World, decorrelate_rng

    draws = []
    for rank in (0, 1):
        torch.manual_seed(7)
        decorrelate_rng(World(rank=rank, size=2), step=3)
        draws.append(torch.rand(4))
    torch.manual_seed(7)
    assert torch.equal(draws[0], torch.rand(4))  # rank 0 keeps the single-process stream
    assert not torch.equal(draws[0], draws[1])


@pytest.mark.parametrize("scores, kept", [([0.5, 0.9, 0.7, 0.6], 2), ([0.5, 0.6, 0.7, 0.9], 4), ([0.5, 0.9, 0.9, 0.6], 2)])
def test_fit_names_the_step_whose_weights_it_ends_with(tmp_path, scores, kept):
    """keep_best: the model ends with the weights of the first best evaluation, and fit() names its
    step (finetune.py reuses that evaluation's dev report instead of scoring the same weights again)."""
    seen = {}

    def evaluate(m):
        seen[t.step] = {k: v.clone() for k, v in m.state_dict().items()}
        return {"dev_accuracy": scores[t.step - 1]}

    settings = TrainArgs(out=str(tmp_path), max_steps=4, eval_every=1, save_every=1000, warmup=1, metric="dev_accuracy", mode="max",
                         keep_best=True)
    t = Trainer(encoder(), None, RaggedMLM(), pretraining_loss("mlm+nsp"), pretraining_targets("mlm+nsp"), evaluate, settings)
    fitted = t.fit()
    assert fitted["weights_step"] == kept and fitted["best"] == max(scores)
    assert all(torch.equal(v, seen[kept][k]) for k, v in t.model.state_dict().items())
    if kept != 4:  # and not the last step's: the model went back to them
        assert any(not torch.equal(v, seen[4][k]) for k, v in t.model.state_dict().items())
