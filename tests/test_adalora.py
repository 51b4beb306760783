"""AdaLoRA (minilm/peft/adalora.py): the SVD-shaped update and its merge, the orthogonality
penalty, the importance scores and the cubic budget, and `finetune.py --peft adalora` end to end."""

import pytest
import torch
from torch import nn

import finetune
from minilm import peft
from minilm.checkpoint import from_pretrained
from minilm.peft.adalora import RankAllocator, SVDLinear, orthogonality_loss, orthogonality_targets, svd_layers

from conftest import tiny_model
from test_peft import finetune_dev
from test_scripts import corpus, encoder_ckpt, write_task  # noqa: F401 (fixtures)


def test_svd_linear_starts_as_base_computes_its_formula_and_merges_exactly():
    torch.manual_seed(0)
    base = nn.Linear(6, 5).double()
    layer = SVDLinear(base, r=3, alpha=6.0).double()
    x = torch.randn(4, 6, dtype=torch.float64)
    assert torch.equal(layer(x), base(x))  # lambda = 0
    with torch.no_grad():
        layer.lora_lambda.normal_()
    P, lam, Q = layer.lora_P, layer.lora_lambda, layer.lora_Q
    expected = base(x) + 2.0 * (x @ (P @ torch.diag(lam) @ Q).T)  # alpha / r = 2
    torch.testing.assert_close(layer(x), expected)
    torch.testing.assert_close(layer.merge()(x), layer(x))
    assert float(layer.orthogonality().detach()) == pytest.approx(0.0, abs=1e-5)  # P and Q start orthonormal
    with torch.no_grad():
        P.add_(0.3 * torch.randn_like(P))
        Q.add_(0.3 * torch.randn_like(Q))
    eye = torch.eye(3, dtype=torch.float64)
    R = torch.linalg.matrix_norm(P.T @ P - eye) ** 2 + torch.linalg.matrix_norm(Q @ Q.T - eye) ** 2
    assert float(R.detach()) > 0.01
    torch.testing.assert_close(layer.orthogonality().double(), R, rtol=1e-5, atol=1e-6)


def adapted(r=4, targets=("q_proj", "v_proj")):
    model = tiny_model("encoder", head="cls", n_labels=3)
    peft.apply(model, peft.PeftSpec("adalora", "unused", r=r, targets=list(targets), trainable=["classifier.out.weight", "classifier.out.bias"]))
    return model


def test_apply_freezes_all_but_the_triplets_and_head_and_starts_as_the_base():
    model = tiny_model("encoder", head="cls", n_labels=3)
    ids = torch.randint(5, 53, (2, 7))
    before = model(ids)
    peft.apply(model, peft.PeftSpec("adalora", "unused", r=4, targets=["q_proj", "v_proj"], trainable=["classifier.out.weight", "classifier.out.bias"]))
    assert torch.equal(model(ids), before)
    trained = set(peft.trained_tensors(model))
    assert trained == {n for n, _ in model.named_parameters() if "lora_" in n} | {"classifier.out.weight", "classifier.out.bias"}
    assert len(svd_layers(model)) == 2 * model.config.n_layer


def test_the_orthogonality_penalty_is_added_once_with_its_weight():
    model = adapted()
    batch = {"x": torch.ones(1)}
    loss_fn = orthogonality_loss(lambda m, b: {"task": (torch.tensor(3.0), 2)}, gamma=0.5)
    parts = loss_fn(model, batch)
    layers = list(svd_layers(model).values())
    expected = 0.5 * sum(m.orthogonality() for m in layers) / len(layers)
    torch.testing.assert_close(parts["orthogonality"][0], expected)
    assert parts["task"] == (torch.tensor(3.0), 2)
    assert orthogonality_targets(lambda b: {"task": 2})(batch) == {"task": 2, "orthogonality": 1}
    parts["orthogonality"][0].backward()
    assert all(m.lora_P.grad.abs().sum() > 0 and m.lora_Q.grad.abs().sum() > 0 for m in layers)


def test_the_budget_follows_the_cubic_schedule():
    model = adapted(r=4)  # 4 layers (q and v of 2 blocks) of rank 4: b(0) = 16; target rank 1: b(T) = 4
    alloc = RankAllocator(model, target_r=1, total_steps=100, t_init=10, t_final=30)
    assert (alloc.b0, alloc.bT) == (16, 4)
    assert alloc.budget(0) == alloc.budget(9) == 16
    assert alloc.budget(10) == 16
    assert alloc.budget(40) == int(4 + 12 * (1 - 30 / 60) ** 3)  # 5
    assert alloc.budget(69) == int(4 + 12 * (1 / 60) ** 3) == 4
    assert alloc.budget(70) == alloc.budget(99) == 4
    with pytest.raises(ValueError, match=r"the target rank must lie in \[1, 4\]"):
        RankAllocator(model, target_r=5, total_steps=100, t_init=10, t_final=30)


def test_importance_is_the_smoothed_sensitivity_times_its_uncertainty():
    model = adapted(r=2)
    alloc = RankAllocator(model, target_r=1, total_steps=10, t_init=2, t_final=2, beta1=0.5, beta2=0.25)
    name, layer = next(iter(alloc.layers.items()))
    g1, g2 = torch.randn(2), torch.randn(2)
    with torch.no_grad():
        layer.lora_lambda.copy_(torch.tensor([1.0, -2.0]))
    ipt, unc = torch.zeros(2), torch.zeros(2)
    for g in (g1, g2):
        layer.lora_lambda.grad = g.clone()
        alloc.update_importance()
        sensitivity = (layer.lora_lambda.detach() * g).abs()
        ipt = 0.5 * ipt + 0.5 * sensitivity
        unc = 0.25 * unc + 0.75 * (sensitivity - ipt).abs()
    s_lambda = ipt * unc  # P and Q got no gradient: their scores are 0
    torch.testing.assert_close(alloc.scores()[name], s_lambda)


def test_after_step_keeps_the_best_triplets_over_all_layers_then_fixes_the_pattern():
    model = adapted(r=3)  # 4 layers (q and v of 2 blocks) of rank 3: 12 triplets; target rank 1: 4 kept
    alloc = RankAllocator(model, target_r=1, total_steps=20, t_init=2, t_final=5, every=1)
    layers = list(alloc.layers.values())
    assert len(layers) == 4
    wanted = {0: [0, 2], 2: [1], 3: [0]}  # 4 triplets with a gradient; the others none
    with torch.no_grad():
        for m in layers:
            m.lora_lambda.fill_(1.0)
    for k, m in enumerate(layers):
        for p in (m.lora_P, m.lora_Q):
            p.grad = torch.zeros_like(p)
        m.lora_lambda.grad = torch.tensor([10.0 * (1 + k) if i in wanted.get(k, []) else 0.0 for i in range(3)])
    for step in range(1, 16):  # the budget reaches 4 at step 15 = T - t_final
        alloc.after_step(step)
    kept = {k: (m.lora_lambda != 0).nonzero().flatten().tolist() for k, m in enumerate(layers)}
    assert {k: v for k, v in kept.items() if v} == wanted
    with torch.no_grad():  # an optimizer step moves every lambda; the fixed pattern zeroes them again
        for m in layers:
            m.lora_lambda.fill_(2.0)
        layers[1].lora_lambda.grad.fill_(1e6)  # however important a pruned triplet turns, the pattern stays
    alloc.after_step(16)
    assert {k: (m.lora_lambda != 0).nonzero().flatten().tolist() for k, m in enumerate(layers) if (m.lora_lambda != 0).any()} == wanted
    report = alloc.report()
    assert list(report["ranks"].values()) == [2, 0, 1, 1] and report["budget"] == 4
    assert report["kept_parameters"] == sum(r * (m.base.in_features + m.base.out_features + 1) for r, m in zip(report["ranks"].values(), layers))


def test_finetune_adalora_learns_ends_at_its_budget_and_merges(tmp_path, encoder_ckpt, capsys):
    tr, dv = write_task(tmp_path / "train.tsv", 400, 1), write_task(tmp_path / "dev.tsv", 80, 2)
    result = finetune.main(["--init", str(encoder_ckpt), "--train", str(tr), "--dev", str(dv), "--out", str(tmp_path / "o"), "--peft", "adalora",
                            "--lora-r", "2", "--lora-targets", "q_proj,v_proj,fc1", "--epochs", "8", "--lr", "1e-2", "--batch-size", "16",
                            "--device", "cpu", "--pooling", "cls", "--dropout", "0.1", "--dtype", "fp32"])
    out = capsys.readouterr().out
    assert "AdaLoRA: rank 3 per layer" in out and "AdaLoRA ranks:" in out
    n_layers = 3 * from_pretrained(encoder_ckpt).config.n_layer
    assert sum(result["adalora"]["ranks"].values()) == 2 * n_layers  # the budget, spread unevenly or not
    assert result["dev"]["accuracy"] >= 0.9
    assert (tmp_path / "o" / "adapter.safetensors").exists() and not (tmp_path / "o" / "model.safetensors").exists()
    reloaded = finetune.evaluate_task("cls", from_pretrained(tmp_path / "o"), finetune_dev(tmp_path / "o", dv), result["labels"])
    assert reloaded["accuracy"] == pytest.approx(result["dev"]["accuracy"], abs=1e-9)


@pytest.mark.parametrize("flags, message", [
    (["--adalora-init-r", "4"], "--adalora-init-r and --adalora-orth apply with --peft adalora only"),
    (["--peft", "lora", "--adalora-orth", "1"], "--adalora-init-r and --adalora-orth apply with --peft adalora only"),
    (["--peft", "adalora", "--lora-r", "8", "--adalora-init-r", "4"], "--adalora-init-r 4 is below the final mean rank --lora-r 8"),
])
def test_adalora_flag_errors(flags, message, capsys):
    with pytest.raises(SystemExit):
        finetune.parse_args(["--train", "x.tsv", "--init", "some/ckpt", *flags])
    assert message in capsys.readouterr().err
