"""Parameters laid end to end (minilm/optim/flat.py): the same values, the same updates as tensor by
tensor, state that survives a checkpoint, and files that save."""

import copy

import pytest
import torch
import torch.nn.functional as F

import minilm.trainer
from conftest import tiny_config
from minilm.checkpoint import from_pretrained, load_state, save_state
from minilm.models import build_model
from minilm.optim import Adam, AdamW, clip_grad_norm, param_groups
from minilm.optim.flat import flatten_, gather, span, zero_grad_
from test_trainer import RaggedMLM, encoder, rel_diff, trainer


def decoder(seed=0):
    torch.manual_seed(seed)
    return build_model(tiny_config("decoder", n_layer=2))


def lm_loss(model, ids):
    logits = model(ids[:, :-1])  # (B, T-1, V)
    return F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())


def test_span_finds_consecutive_views_only():
    buffer = torch.arange(10.0)
    a, b, c = buffer[0:3], buffer[3:7].view(2, 2), buffer[7:10]
    assert torch.equal(span([a, b, c]), buffer)
    assert torch.equal(span([b, c]), buffer[3:])
    assert span([a, c]) is None  # a gap
    assert span([b, a]) is None  # out of order
    assert span([a, torch.arange(3.0, 7.0)]) is None  # another storage
    assert span([buffer[0:6].view(2, 3).t()]) is None  # not contiguous
    assert span([a, None]) is None


def test_flatten_keeps_every_value_and_backward_fills_the_buffer():
    model, twin = decoder(), decoder()
    groups = param_groups(model, 0.1)  # matrices, then the rest: the buffer's order
    (grads,) = flatten_(groups)
    ordered = [p for g in groups for p in g["params"]]
    assert len(ordered) == len(list(model.parameters())) and grads.numel() == sum(p.numel() for p in ordered)
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        assert torch.equal(p, q), name
    assert span(ordered) is not None and span([p.grad for p in ordered]) is not None
    ids = torch.randint(0, 53, (3, 10), generator=torch.Generator().manual_seed(0))
    for _ in range(2):  # the second backward must add into the zeroed views, not replace them
        zero_grad_([grads])
        twin.zero_grad(set_to_none=True)
        lm_loss(model, ids).backward()
        lm_loss(twin, ids).backward()
    twin_groups = param_groups(twin, 0.1)
    expected = torch.cat([p.grad.reshape(-1) for g in twin_groups for p in g["params"]])
    assert expected.abs().sum() > 0
    torch.testing.assert_close(grads, expected, rtol=1e-6, atol=1e-8)
    assert span([p.grad for p in ordered]) is not None  # still views


@pytest.mark.parametrize("opt,hp,foreach", [
    (AdamW, dict(lr=3e-3, weight_decay=0.1), True),
    (Adam, dict(lr=3e-3, betas=(0.8, 0.95), weight_decay=0.01), True),
    (AdamW, dict(lr=1e-2, amsgrad=True, maximize=True), True),
    (AdamW, dict(lr=3e-3, weight_decay=0.1), "compiled"),
])
def test_the_update_of_the_buffer_equals_the_update_tensor_by_tensor(opt, hp, foreach):
    """20 steps on a flattened model and on a twin updated tensor by tensor: the same weights (to
    the bit on the foreach path: elementwise arithmetic does not care how the tensor is cut), and
    the flat path was the one taken (the moments became views into one buffer)."""
    model, twin = decoder(), decoder()
    ours = opt(param_groups(model, hp.get("weight_decay", 0.0)), **hp, foreach=foreach)
    theirs = opt(param_groups(twin, hp.get("weight_decay", 0.0)), **hp, foreach=foreach)
    grads = flatten_(ours.param_groups)
    gen = torch.Generator().manual_seed(1)
    for _ in range(20):
        ids = torch.randint(0, 53, (4, 12), generator=gen)
        zero_grad_(grads)
        theirs.zero_grad(set_to_none=True)
        lm_loss(model, ids).backward()
        lm_loss(twin, ids).backward()
        ours.step()
        theirs.step()
    for group in ours.param_groups:
        assert span([ours.state[p]["exp_avg"] for p in group["params"]]) is not None
    start = decoder()
    assert max((p - q).abs().max().item() for p, q in zip(twin.parameters(), start.parameters())) > 1e-2
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        if foreach is True:
            assert torch.equal(p, q), name
        else:
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_state_loaded_back_is_laid_out_again_and_continues_alike(tmp_path):
    """The optimizer state saved (its views given storage of their own) and loaded back holds
    tensors of their own; the next step lays them end to end again and continues exactly as the
    run that never stopped."""
    model = decoder()
    ours = AdamW(param_groups(model, 0.1), lr=3e-3)
    grads = flatten_(ours.param_groups)
    ids = torch.randint(0, 53, (4, 12), generator=torch.Generator().manual_seed(2))
    for _ in range(3):
        zero_grad_(grads)
        lm_loss(model, ids).backward()
        ours.step()
    resumed = copy.deepcopy(model)
    again = AdamW(param_groups(resumed, 0.1), lr=3e-3)
    save_state(tmp_path, {"optimizer": ours.state_dict()})
    loaded = load_state(tmp_path)["optimizer"]
    again.load_state_dict({**loaded, "state": {int(k): v for k, v in loaded["state"].items()}})
    again_grads = flatten_(again.param_groups)
    first = again.param_groups[0]["params"]
    assert span([again.state[p]["exp_avg"] for p in first]) is None  # as loaded: tensors of their own
    for m, opt, g in ((model, ours, grads), (resumed, again, again_grads)):
        zero_grad_(g)
        lm_loss(m, ids).backward()
        opt.step()
    assert span([again.state[p]["exp_avg"] for p in first]) is not None
    for p, q in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


def test_gather_keeps_the_values():
    states = [{"m": torch.full((2, 3), 1.0)}, {"m": torch.arange(4.0)}]
    before = [s["m"].clone() for s in states]
    buffer = gather(states, "m")
    assert buffer.shape == (10,)
    for s, b in zip(states, before):
        assert torch.equal(s["m"], b)
    assert gather(states, "m").data_ptr() == buffer.data_ptr()  # found again, not made again


def test_clipping_the_buffer_equals_clipping_tensor_by_tensor():
    model, twin = decoder(), decoder()
    grads = flatten_(param_groups(model, 0.0))
    ids = torch.randint(0, 53, (4, 12), generator=torch.Generator().manual_seed(3))
    lm_loss(model, ids).backward()
    lm_loss(twin, ids).backward()
    ordered = [p for g in param_groups(model, 0.0) for p in g["params"]]
    norm = clip_grad_norm(ordered, 0.01)
    expected = torch.nn.utils.clip_grad_norm_(list(twin.parameters()), 0.01).item()
    assert norm == pytest.approx(expected, rel=1e-5) and norm > 0.01  # it clipped
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-9)
    assert grads[0].norm().item() == pytest.approx(0.01, rel=1e-4)


def test_the_trainer_lays_out_its_model_and_trains_as_without(tmp_path, monkeypatch):
    """The Trainer flattens its model; 6 steps end where a Trainer that does not ends (to the
    rounding of the gradient norm's sum), and the checkpoint it writes loads back."""
    flat = trainer(tmp_path / "flat", encoder(), RaggedMLM(learnable=True), max_steps=6, grad_clip=1.0)
    assert flat.flat_grads is not None
    flat.fit()
    monkeypatch.setattr(minilm.trainer, "flatten_", lambda groups: None)
    plain = trainer(tmp_path / "plain", encoder(), RaggedMLM(learnable=True), max_steps=6, grad_clip=1.0)
    assert plain.flat_grads is None
    plain.fit()
    assert rel_diff(flat.model, encoder()) > 1e-3  # it trained
    assert rel_diff(flat.model, plain.model) < 1e-5
    loaded = from_pretrained(tmp_path / "flat")
    for (name, p), q in zip(flat.model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(p, q), name
    resumed = trainer(tmp_path / "flat", encoder(), RaggedMLM(learnable=True), max_steps=6, resume=True)
    assert resumed.try_resume() and resumed.step == 6
