"""Checkpoints: bit-identical round trips, tied weights, safetensors on disk, crash safety, errors."""

import argparse
import json
import struct

import pytest
import torch

import minilm.checkpoint as checkpoint
import minilm.files as files
from conftest import ROOT, load_file, run, tiny_config, tiny_model
from minilm.checkpoint import from_pretrained, load_state, resolve_checkpoint, save_checkpoint, save_pretrained
from minilm.config import ModelConfig
from minilm.tokenizer import Tokenizer

FAMILIES = [("encoder", "mlm"), ("encoder", "mlm+nsp"), ("decoder", "lm"), ("encoder-decoder", "lm")]


def trained_like(arch, head, seed=0, **changes):
    """A tiny model whose weights are far from any fresh initialisation (so a silent non-load shows)."""
    model = tiny_model(arch, head, seed=seed, **changes)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def inputs(model):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (2, 9), generator=g)
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0
    return ids, mask


def outputs(model):
    ids, mask = inputs(model)
    with torch.no_grad():
        return run(model, ids, mask)


def tied_groups(model):
    """Names of parameters that share one tensor."""
    groups = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        groups.setdefault(p.data_ptr(), []).append(name)
    return sorted(sorted(g) for g in groups.values() if len(g) > 1)


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train(["alpha beta gamma delta", "beta gamma delta epsilon"] * 10, "wordpiece", vocab_size=60)


@pytest.mark.parametrize("arch, head", FAMILIES)
def test_save_and_load_is_bit_identical_and_keeps_ties(tmp_path, arch, head, tokenizer):
    model = trained_like(arch, head)
    expected = outputs(model)
    ties = tied_groups(model)
    assert ties  # every family ties its token embedding to its output layer (or across encoder/decoder)
    save_pretrained(tmp_path, model, tokenizer)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert ModelConfig.load(tmp_path / "config.json") == model.config

    torch.manual_seed(999)  # a different fresh initialisation underneath
    loaded = from_pretrained(tmp_path)
    assert not loaded.training
    assert torch.equal(outputs(loaded), expected)
    assert tied_groups(loaded) == ties
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    # still tied: a change through one name shows through the other
    with torch.no_grad():
        dict(loaded.named_parameters(remove_duplicate=False))[ties[0][0]].add_(1.0)
    params = dict(loaded.named_parameters(remove_duplicate=False))
    assert torch.equal(params[ties[0][0]], params[ties[0][-1]])
    assert Tokenizer.load(tmp_path).encode("alpha beta") == tokenizer.encode("alpha beta")


def test_classifier_checkpoint_keeps_labels(tmp_path):
    model = trained_like("encoder", "cls", n_labels=3, labels=["neg", "neutral", "pos"])
    save_pretrained(tmp_path, model)
    loaded = from_pretrained(tmp_path)
    assert loaded.config.labels == ["neg", "neutral", "pos"]
    assert torch.equal(outputs(loaded), outputs(model))
    assert not (tmp_path / "tokenizer.json").exists()


def read_safetensors_header(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])  # 8-byte little-endian header length
    assert raw[8:9] == b"{" and 8 + n <= len(raw)
    return json.loads(raw[8 : 8 + n])


def test_files_are_safetensors_and_json_never_pickle(tmp_path):
    model = trained_like("decoder", "lm")
    params = list(model.parameters())
    moments = {i: {"exp_avg": p.detach() * 0.1, "exp_avg_sq": p.detach() ** 2} for i, p in enumerate(params)}
    optimizer = {"state": moments, "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.99), "params": list(range(len(params)))}]}
    save_checkpoint(tmp_path / "ckpt", model, state={"optimizer": optimizer, "step": 1})
    header = read_safetensors_header(tmp_path / "ckpt" / "model.safetensors")
    stored = set(header) - {"__metadata__"}
    assert stored < set(model.state_dict())  # the tied weight is stored once
    assert len(stored) == len(model.state_dict()) - 1
    state_header = read_safetensors_header(tmp_path / "ckpt" / "training_state.safetensors")
    assert len(set(state_header) - {"__metadata__"}) == 2 * len(params)  # two moments per parameter
    for path in (tmp_path / "ckpt").iterdir():
        start = path.read_bytes()[:2]
        assert start[:1] != b"\x80" and start != b"PK", path  # neither a pickle nor a torch.save zip
        if path.suffix == ".json":
            json.loads(path.read_text())


def test_state_round_trip(tmp_path):
    model = tiny_model("decoder")
    g = torch.Generator().manual_seed(0)
    state = {
        "step": 17,
        "lr": 3e-4,
        "best": None,
        "flag": True,
        "name": "run-1",
        "history": [1.5, 2.25, None, 3],
        "pair": (4, 5.0),
        "rng_torch": torch.get_rng_state(),
        "nested": {
            "moments": [torch.randn(3, 4, generator=g), {"deep": torch.arange(6, dtype=torch.int64).reshape(2, 3)}],
            "half": torch.randn(5, generator=g).to(torch.bfloat16),
            "scalar": torch.tensor(2.5, dtype=torch.float64),
            "mask": torch.tensor([True, False]),
            "view": torch.randn(4, 6, generator=g).t(),  # not contiguous
            "empty": [],
            "plain": {"x": 1},
        },
    }
    save_checkpoint(tmp_path / "ckpt", model, state=state)
    restored = load_state(tmp_path / "ckpt")

    def check(a, b):
        if isinstance(a, torch.Tensor):
            assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
        elif isinstance(a, dict):
            assert list(a) == list(b)
            for k in a:
                check(a[k], b[k])
        elif isinstance(a, (list, tuple)):
            assert isinstance(b, list) and len(a) == len(b)  # tuples come back as lists (JSON)
            for x, y in zip(a, b):
                check(x, y)
        else:
            assert type(a) is type(b) and a == b

    check(state, restored)


def test_crash_while_saving_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    directory = tmp_path / "ckpt"
    first, second = trained_like("decoder", "lm", seed=1), trained_like("decoder", "lm", seed=2)
    save_checkpoint(directory, first, state={"step": 1, "t": torch.ones(2)})

    def crashing_save_state(path, state):  # writes part of the new state, then dies
        (path / "training_state.safetensors").write_bytes(b"\x00" * 10)
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(checkpoint, "save_state", crashing_save_state)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(directory, second, state={"step": 2, "t": torch.zeros(2)})
    monkeypatch.undo()

    assert resolve_checkpoint(directory) == directory
    assert torch.equal(outputs(from_pretrained(directory)), outputs(first))
    state = load_state(directory)
    assert state["step"] == 1 and torch.equal(state["t"], torch.ones(2))

    save_checkpoint(directory, second, state={"step": 2, "t": torch.zeros(2)})  # the next save works
    assert torch.equal(outputs(from_pretrained(directory)), outputs(second)) and load_state(directory)["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary or old directory left


def crash_in_swap(directory, model, monkeypatch):
    """save_checkpoint dying after the old directory moved aside, before the new one took its place."""
    real_replace = files.os.replace

    def replace(src, dst):
        if str(src).endswith(f".{directory.name}.tmp"):
            raise KeyboardInterrupt("killed mid-swap")
        return real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(directory, model, state={"step": 2})
    monkeypatch.undo()


def test_resolve_checkpoint_falls_back_to_the_old_directory(tmp_path, monkeypatch, tokenizer):
    directory = tmp_path / "ckpt"
    first, second = trained_like("encoder", "mlm", seed=1), trained_like("encoder", "mlm", seed=2)
    save_checkpoint(directory, first, tokenizer, state={"step": 1})
    assert resolve_checkpoint(directory) == directory
    crash_in_swap(directory, second, monkeypatch)

    assert not directory.exists()
    old = tmp_path / ".ckpt.old"
    assert resolve_checkpoint(directory) == old
    assert torch.equal(outputs(from_pretrained(directory)), outputs(first))
    assert load_state(resolve_checkpoint(directory))["step"] == 1
    assert Tokenizer.load(resolve_checkpoint(directory)).vocab_size == tokenizer.vocab_size

    save_checkpoint(directory, second, tokenizer, state={"step": 3})  # the next save completes and tidies up
    assert resolve_checkpoint(directory) == directory and not old.exists()
    assert load_state(directory)["step"] == 3 and torch.equal(outputs(from_pretrained(directory)), outputs(second))


def test_infer_loads_a_checkpoint_interrupted_mid_swap(tmp_path, monkeypatch, tokenizer):
    infer = load_file(ROOT / "infer.py", "minilm_infer_script")
    directory = tmp_path / "ckpt"
    save_checkpoint(directory, trained_like("decoder", "lm"), tokenizer)
    crash_in_swap(directory, trained_like("decoder", "lm", seed=3), monkeypatch)
    model, tk = infer.load(argparse.Namespace(ckpt=str(directory), device="cpu", quantize=None, compile=False), "generate")
    assert tk.vocab_size == tokenizer.vocab_size


def test_from_pretrained_missing_directory_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere: no such checkpoint directory"):
        from_pretrained(tmp_path / "nowhere")
    save_pretrained(tmp_path / "a", tiny_model("decoder"))
    (tmp_path / "a" / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"a: not a minilm checkpoint \(missing config\.json\)"):
        from_pretrained(tmp_path / "a")
    save_pretrained(tmp_path / "b", tiny_model("decoder"))
    (tmp_path / "b" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"b: not a minilm checkpoint \(missing model\.safetensors\)"):
        from_pretrained(tmp_path / "b")


@pytest.mark.parametrize(
    "changes",
    [
        dict(n_embd=64),  # every shape differs
        dict(vocab_size=60),  # one shape differs
        dict(n_layer=3),  # missing weights
        dict(n_layer=1),  # unexpected weights
        dict(tie_embeddings=False),  # the untied head has no stored weight
    ],
)
def test_from_pretrained_weights_that_do_not_fit_the_config(tmp_path, changes):
    save_pretrained(tmp_path, tiny_model("decoder"))
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, **changes}))
    with pytest.raises(ValueError, match=r"model\.safetensors: weights do not fit .*config\.json: "):
        from_pretrained(tmp_path)


def test_from_pretrained_broken_files(tmp_path):
    save_pretrained(tmp_path, tiny_model("decoder"))
    (tmp_path / "model.safetensors").write_bytes(b"\x80\x04 not safetensors at all")
    with pytest.raises(ValueError, match=r"model\.safetensors: weights do not fit"):
        from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"arch": "decoder",')
    with pytest.raises(ValueError, match=r"config\.json: line 1: not valid JSON"):
        from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"arch": "decoder", "n_embed": 32}')
    with pytest.raises(ValueError, match=r"config\.json: unknown config field\(s\) n_embed"):
        from_pretrained(tmp_path)


@pytest.mark.parametrize("arch", ["encoder", "decoder", "encoder-decoder"])
def test_config_changes_at_load_time(tmp_path, arch):
    model = trained_like(arch, None, attn_impl="sdpa")
    save_pretrained(tmp_path, model)
    math_model = from_pretrained(tmp_path, attn_impl="math", dropout=0.0)
    assert math_model.config.attn_impl == "math" and model.config.attn_impl == "sdpa"
    assert math_model.config.replace(attn_impl="sdpa") == model.config
    torch.testing.assert_close(outputs(math_model), outputs(model), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"ModelConfig\.attn_impl='flash': expected one of 'math', 'sdpa'"):
        from_pretrained(tmp_path, attn_impl="flash")
    with pytest.raises(ValueError, match=r"weights do not fit"):
        from_pretrained(tmp_path, n_head=2, n_embd=64)


def test_saving_unwraps_compiled_and_ddp_like_wrappers(tmp_path):
    model = trained_like("decoder", "lm")

    class Wrapper(torch.nn.Module):  # what DDP looks like from the outside: the model under .module
        def __init__(self, module):
            super().__init__()
            self.module = module

    save_pretrained(tmp_path, Wrapper(model))
    header = read_safetensors_header(tmp_path / "model.safetensors")
    assert not any(k.startswith("module.") for k in header)
    assert torch.equal(outputs(from_pretrained(tmp_path)), outputs(model))
    assert tiny_config("decoder") == from_pretrained(tmp_path).config


def test_tied_weights_are_stored_under_the_embedding_and_every_alias_loads(tmp_path):
    """A tied MLM decoder / LM head is stored once, as the token embedding; a model started from
    the checkpoint (finetune.py --init) receives the embedding whichever name the file used."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from minilm.checkpoint import load_weights
    from minilm.training.finetuning import init_model

    model = tiny_model("encoder", "mlm+nsp")
    save_pretrained(tmp_path / "ckpt", model)
    with safe_open(tmp_path / "ckpt" / "model.safetensors", "pt") as f:
        names = set(f.keys())
    assert "transformer.embed.token.weight" in names and "mlm.decoder.weight" not in names
    # a file that kept the head's name instead (as safetensors' save_model does) loads the same
    state = {k: v for k, v in model.state_dict().items() if k != "transformer.embed.token.weight"}
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "ckpt" / "model.safetensors")
    weights = load_weights(tmp_path / "ckpt")
    assert torch.equal(weights["transformer.embed.token.weight"], model.transformer.embed.token.weight)
    classifier, new = init_model(model.config.replace(head="cls", n_labels=3), tmp_path / "ckpt")
    assert new == ["classifier.out.bias", "classifier.out.weight"]
    assert torch.equal(classifier.transformer.embed.token.weight, model.transformer.embed.token.weight)
