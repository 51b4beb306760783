"""FGM adversarial training (minilm/training/adversarial.py, finetune.py --adversarial fgm): the
perturbation is epsilon along each example's gradient, the loss is L(e) + L(e + r_adv) computed
independently here, and fine-tuning runs with it (also with a frozen embedding table and on pairs)."""

import pytest
import torch
from torch import nn

import finetune
from conftest import tiny_model
from minilm.training import adversarial
from minilm.training.finetuning import task_loss, task_targets
from test_scripts import TINY, write_task


def batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 53, (3, 7), generator=g)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 5:] = 0  # a padded row
    return {"input_ids": ids, "attention_mask": mask, "segment_ids": torch.zeros_like(ids), "labels": torch.tensor([0, 2, 1])}


def test_perturbation_has_length_epsilon_along_the_gradient():
    g = torch.randn(4, 5, 6)
    r = adversarial.perturbation(g, 0.3)
    assert torch.allclose(r.flatten(1).norm(dim=1), torch.full((4,), 0.3))
    assert torch.allclose(torch.cosine_similarity(r.flatten(1), g.flatten(1)), torch.ones(4))


class Given(nn.Module):
    """A 'token table' whose output is a given (B, T, C) tensor."""

    def __init__(self, e):
        super().__init__()
        self.e = e

    def forward(self, ids):
        return self.e


class Shifted(nn.Module):
    """The token table with a fixed (B, T, C) tensor added to its output: L(e + r) without hooks."""

    def __init__(self, table, r):
        super().__init__()
        self.table, self.r = table, r

    def forward(self, ids):
        return self.table(ids) + self.r


def test_fgm_loss_is_the_equation_and_its_gradient():
    model = tiny_model("encoder", head="cls", n_labels=3).train()
    b, eps = batch(), 0.5
    loss_fn = task_loss("cls")
    parts = adversarial.fgm_loss(loss_fn, eps)(model, b)
    assert set(parts) == {"ce", "adv_ce"} and parts["adv_ce"][1] == 3
    total = sum(s / n for s, n in parts.values())
    got = torch.autograd.grad(total, list(model.parameters()))

    # the reference: g from the embedding output of a clean pass, r_adv = eps g / ||g|| per example
    embed = model.transformer.embed
    table = embed.token
    e = table(b["input_ids"]).detach().requires_grad_()
    embed.token = Given(e)
    clean = loss_fn(model, b)["ce"][0] / 3
    (g,) = torch.autograd.grad(clean, e)
    r = eps * g / g.flatten(1).norm(dim=1)[:, None, None]
    embed.token = table
    clean = loss_fn(model, b)["ce"][0]
    embed.token = Shifted(table, r)
    adv = loss_fn(model, b)["ce"][0]
    embed.token = table
    assert torch.allclose(parts["ce"][0], clean, atol=1e-5)
    assert torch.allclose(parts["adv_ce"][0], adv, atol=1e-5) and not torch.allclose(adv, clean, atol=1e-3)
    want = torch.autograd.grad(clean / 3 + adv / 3, list(model.parameters()))
    assert all(torch.allclose(a, w, atol=1e-5) for a, w in zip(got, want))
    assert {k: int(v) for k, v in adversarial.fgm_targets(task_targets("cls"))(b).items()} == {"ce": 3, "adv_ce": 3}


def test_a_frozen_table_still_gets_a_perturbation():
    model = tiny_model("encoder", head="cls", n_labels=3).train()
    model.transformer.embed.token.weight.requires_grad_(False)
    parts = adversarial.fgm_loss(task_loss("cls"), 1.0)(model, batch())
    assert not torch.allclose(parts["ce"][0], parts["adv_ce"][0])


def test_finetune_with_fgm(tmp_path, capsys):
    write_task(tmp_path / "train.tsv", 200, seed=0)
    write_task(tmp_path / "dev.tsv", 60, seed=1)
    result = finetune.main(["--init", "scratch", "--train", str(tmp_path / "train.tsv"), "--dev", str(tmp_path / "dev.tsv"),
                            "--out", str(tmp_path / "fgm"), "--adversarial", "fgm", "--epsilon", "0.05",
                            "--epochs", "4", "--lr", "2e-3", "--batch-size", "16", *TINY])
    assert "adversarial training: FGM on the token embeddings, epsilon 0.05" in capsys.readouterr().out
    # four topics: chance is 25%. A table trained from scratch starts with rows of norm ~0.1: epsilon 0.5 drowns the
    # words (dev accuracy 0.23 seen), 0.05 leaves them readable
    assert result["dev"]["accuracy"] >= 0.7


@pytest.mark.parametrize("flags, message", [
    (["--epsilon", "0.5"], "--epsilon applies with --adversarial only"),
    (["--adversarial", "fgm", "--epsilon", "0"], "--epsilon must be > 0, got 0.0"),
    (["--adversarial", "fgm", "--task", "sft"], "--adversarial applies to --task cls, regression and ner, not sft"),
])
def test_fgm_flag_errors(flags, message, capsys):
    with pytest.raises(SystemExit):
        finetune.parse_args(flags)
    assert message in capsys.readouterr().err
