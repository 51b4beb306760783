"""The hand-written optimizers perform exactly torch.optim's updates; schedules and clipping."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_config
from minilm.model.families import build_model
from minilm.optim import SGD, Adam, AdamW, DynamicLossScaler, SCHEDULES, clip_grad_norm, lr_at, param_groups, set_lr

SETTINGS = {
    "sgd": [
        dict(lr=0.05),
        dict(lr=0.05, momentum=0.9),
        dict(lr=0.02, momentum=0.9, dampening=0.1, weight_decay=1e-3),
        dict(lr=0.02, momentum=0.8, nesterov=True, weight_decay=1e-2),
        dict(lr=0.05, momentum=0.5, maximize=True),
    ],
    "adam": [
        dict(lr=1e-3),
        dict(lr=3e-3, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1),
        dict(lr=1e-2, amsgrad=True, weight_decay=1e-3),
    ],
    "adamw": [
        dict(lr=1e-3),
        dict(lr=3e-3, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1),
        dict(lr=1e-2, weight_decay=0.0),
        dict(lr=2e-3, amsgrad=True, maximize=True),
    ],
}
OURS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}
TORCH = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def lm_loss(model, ids, sign=1.0):
    logits = model(ids[:, :-1])  # (B, T-1, V)
    return sign * F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())


def one_layer():
    torch.manual_seed(0)
    return build_model(tiny_config("decoder", n_layer=1))


@pytest.mark.parametrize("name,hp", [(n, hp) for n, hps in SETTINGS.items() for hp in hps], ids=lambda x: str(x))
def test_optimizer_matches_torch_over_200_steps(name, hp):
    """200 steps on a minilm decoder: our readable path and our foreach path both end within a
    relative difference of 1e-6 of torch.optim (single-tensor), parameter by parameter, with
    weight decay only on matrices (two parameter groups). With maximize the objective is -loss."""
    ref = one_layer()
    models = {"torch": ref, "readable": copy.deepcopy(ref), "foreach": copy.deepcopy(ref)}
    decay = hp.get("weight_decay", 0.0)
    opts = {
        "torch": TORCH[name](param_groups(models["torch"], decay), **hp, foreach=False),
        "readable": OURS[name](param_groups(models["readable"], decay), **hp, foreach=False),
        "foreach": OURS[name](param_groups(models["foreach"], decay), **hp, foreach=True),
    }
    gen = torch.Generator().manual_seed(1)
    for step in range(200):
        ids = torch.randint(0, 53, (4, 12), generator=gen)
        for key, model in models.items():
            opts[key].zero_grad()
            lm_loss(model, ids, -1.0 if hp.get("maximize") else 1.0).backward()
            opts[key].step()
    for key in ("readable", "foreach"):
        for (pname, p), q in zip(models[key].named_parameters(), ref.parameters()):
            rel = ((p - q).norm() / q.norm().clamp(min=1e-12)).item()
            assert rel <= 1e-6, (key, pname, rel)
    start = one_layer()
    moved = max(((p - q).norm() / q.norm()).item() for p, q in zip(ref.parameters(), start.parameters()))
    assert moved > 1e-2, f"the reference run hardly moved ({moved}); the comparison would be empty"


@pytest.mark.parametrize("name", list(OURS))
def test_state_dict_is_torch_compatible(name):
    """Our state dict loads into torch.optim and the two continue identically."""
    model = one_layer()
    hp = SETTINGS[name][1]
    ours = OURS[name](model.parameters(), **hp)
    ids = torch.randint(0, 53, (2, 9))
    for _ in range(3):
        ours.zero_grad()
        lm_loss(model, ids).backward()
        ours.step()
    twin = copy.deepcopy(model)
    theirs = TORCH[name](twin.parameters(), **hp, foreach=False)
    theirs.load_state_dict(copy.deepcopy(ours.state_dict()))  # load_state_dict may share tensors
    back = OURS[name](model.parameters(), **hp)
    back.load_state_dict(copy.deepcopy(theirs.state_dict()))
    for m, opt in ((model, back), (twin, theirs)):
        opt.zero_grad()
        lm_loss(m, ids).backward()
        opt.step()
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_bad_hyper_parameters_are_refused():
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="lr"):
        AdamW(p, lr=-1)
    with pytest.raises(ValueError, match="betas"):
        Adam(p, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="Nesterov"):
        SGD(p, nesterov=True)


def test_no_weight_decay_on_biases_norms_and_embeddings():
    model = build_model(tiny_config("decoder"))
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.dim() >= 2 and "embed" not in names[id(p)] for p in decay["params"])
    assert any("embed.token" in names[id(p)] for p in no_decay["params"])
    assert any("norm" in names[id(p)] for p in no_decay["params"])
    assert no_decay["weight_decay"] == 0.0


def test_layer_wise_learning_rate_decay_scales_each_depth():
    model = build_model(tiny_config("encoder", head="cls", n_labels=3))
    L, decay = model.config.n_layer, 0.5
    groups = param_groups(model, 0.1, layer_decay=decay)
    names = {id(p): n for n, p in model.named_parameters()}
    scale = {names[id(p)]: g["lr_scale"] for g in groups for p in g["params"]}
    assert len(scale) == len(names)  # every parameter in exactly one group
    assert scale["transformer.embed.token.weight"] == decay ** (L + 1)  # the embeddings: slowest
    assert scale["transformer.blocks.0.attn.q_proj.weight"] == decay**L
    assert scale[f"transformer.blocks.{L - 1}.mlp.fc2.bias"] == decay
    assert all(v == 1.0 for n, v in scale.items() if not n.startswith("transformer.embed") and ".blocks." not in n)  # norm, head: lr
    opt = AdamW(groups, lr=1.0)
    set_lr(opt, 1e-3)
    assert sorted({g["lr"] for g in opt.param_groups}) == pytest.approx(sorted({1e-3 * decay**k for k in range(L + 2)}))
    for g in groups:  # weight decay on matrices only, as without layer decay
        assert g["weight_decay"] == (0.1 if all(p.dim() >= 2 and "embed" not in names[id(p)] for p in g["params"]) else 0.0)
    plain = param_groups(model, 0.1, layer_decay=1.0)
    assert len(plain) == 2 and "lr_scale" not in plain[0]  # no decay: the two groups of plain training
    with pytest.raises(ValueError, match="layer_decay"):
        param_groups(model, 0.1, layer_decay=0.0)


def test_schedules():
    warm, total = 10, 110
    for name in SCHEDULES:
        assert lr_at(name, 0, 1.0, warm, total) == pytest.approx(1.0 if name == "constant" else 0.1)
        assert lr_at(name, warm - 1, 1.0, warm, total) == pytest.approx(1.0)
    assert lr_at("linear", 60, 2.0, warm, total, floor=0.0) == pytest.approx(1.0)
    assert lr_at("linear", total, 2.0, warm, total, floor=0.1) == pytest.approx(0.2)
    assert lr_at("cosine", 60, 2.0, warm, total, floor=0.0) == pytest.approx(1.0)
    assert lr_at("cosine", total, 1.0, warm, total, floor=0.1) == pytest.approx(0.1)
    assert lr_at("cosine", 35, 1.0, warm, total, floor=0.0) == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    assert lr_at("inverse_sqrt", 39, 1.0, warm, total) == pytest.approx(0.5)
    assert lr_at("inverse_sqrt", 159, 1.0, warm, total) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="unknown schedule 'step'"):
        lr_at("step", 0, 1.0, 1, 2)


def test_clip_grad_norm_matches_torch():
    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(5, 3)) for _ in range(3)]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    for p, q in zip(a, b):
        p.grad = torch.randn_like(p) * 3
        q.grad = p.grad.clone()
    assert clip_grad_norm(a, 1.0) == pytest.approx(float(torch.nn.utils.clip_grad_norm_(b, 1.0)), rel=1e-6)
    for p, q in zip(a, b):
        torch.testing.assert_close(p.grad, q.grad)


def test_loss_scaler_skips_overflow_and_grows_back():
    p = torch.nn.Parameter(torch.ones(3))
    scaler = DynamicLossScaler(scale=8.0, interval=2)
    p.grad = torch.tensor([8.0, 16.0, float("inf")])
    assert not scaler.unscale([p]) and scaler.scale == 4.0
    p.grad = torch.tensor([4.0, 8.0, 12.0])
    assert scaler.unscale([p]) and p.grad.tolist() == [1.0, 2.0, 3.0] and scaler.scale == 4.0
    p.grad = torch.tensor([4.0, 8.0, 12.0])
    assert scaler.unscale([p]) and scaler.scale == 8.0
    restored = DynamicLossScaler()
    restored.load_state_dict(scaler.state_dict())
    assert restored.scale == 8.0 and restored.good_steps == 2
