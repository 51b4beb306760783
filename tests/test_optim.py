"""The hand-written AdamW performs exactly torch.optim.AdamW's update."""

import pytest
import torch

from conftest import tiny_config
from minilm.models import build_model
from minilm.optim import AdamW, clip_grad_norm, param_groups, warmup_cosine


@pytest.mark.parametrize("hp", [dict(lr=1e-3), dict(lr=3e-3, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1), dict(lr=1e-2, weight_decay=0.0)])
def test_adamw_matches_torch_on_a_minilm_model(hp):
    torch.manual_seed(0)
    ours = build_model(tiny_config("decoder"))
    ref = build_model(tiny_config("decoder"))
    ref.load_state_dict(ours.state_dict())
    opt_ours = AdamW(param_groups(ours, hp.get("weight_decay", 0.01)), **hp)
    opt_ref = torch.optim.AdamW(param_groups(ref, hp.get("weight_decay", 0.01)), **hp, foreach=False)
    for step in range(50):
        ids = torch.randint(0, 53, (2, 10))
        for model, opt in ((ours, opt_ours), (ref, opt_ref)):
            opt.zero_grad()
            model(ids).logsumexp(-1).mean().backward()
            opt.step()
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        rel = ((p - q).norm() / q.norm().clamp(min=1e-12)).item()
        assert rel <= 1e-6, (name, rel)


def test_adamw_state_dict_round_trip():
    model = build_model(tiny_config("decoder"))
    opt = AdamW(model.parameters(), lr=1e-3)
    model(torch.randint(0, 53, (1, 4))).sum().backward()
    opt.step()
    fresh = AdamW(model.parameters(), lr=1e-3)
    fresh.load_state_dict(opt.state_dict())
    for p in model.parameters():
        torch.testing.assert_close(fresh.state[p]["exp_avg"], opt.state[p]["exp_avg"])


def test_no_weight_decay_on_biases_norms_and_embeddings():
    model = build_model(tiny_config("decoder"))
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.dim() >= 2 and "embed" not in names[id(p)] for p in decay["params"])
    assert any("embed.token" in names[id(p)] for p in no_decay["params"])
    assert no_decay["weight_decay"] == 0.0


def test_warmup_cosine_schedule():
    assert warmup_cosine(0, 10, 100) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine(10, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine(100, 10, 100, floor=0.1) == pytest.approx(0.1)
    assert warmup_cosine(55, 10, 100, floor=0.0) == pytest.approx(0.5)


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
