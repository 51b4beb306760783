"""Pruning (minilm/training/prune.py): blocks with fewer heads and neurons build, load and decode; shrinking
equals gating the removed heads and neurons to zero; importance, selection, magnitude masks and the
cubic schedule follow their equations; the command and finetune.py --sparsity work end to end."""

import json

import pytest
import torch

import finetune
import minilm
from minilm.checkpoint import save_pretrained
from minilm.config import ModelConfig, from_preset
from minilm.inference.generate import generate
from minilm.model.families import build_model
from minilm.training import prune
from test_distill import teacher  # noqa: F401  (a module fixture: a fine-tuned tiny classifier)



def tiny(arch="encoder", **changes):
    config = from_preset("tiny", arch=arch, vocab_size=50, dropout=0.0, attn_dropout=0.0, **changes)
    torch.manual_seed(0)
    return build_model(config).eval()


def test_config_takes_sizes_per_block_and_checks_them():
    c = from_preset("tiny", layer_heads=[1, 2], layer_ff=[3, 100])
    assert c.heads_in(0) == 1 and c.heads_in(1) == 2
    with pytest.raises(ValueError, match=r"layer_heads=\[1, 3\]: expected 2 sizes, each at least 1 and at most n_head=2"):
        from_preset("tiny", layer_heads=[1, 3])
    with pytest.raises(ValueError, match=r"layer_ff=\[0, 4\]"):
        from_preset("tiny", layer_ff=[0, 4])
    with pytest.raises(ValueError, match="one stack of blocks"):
        from_preset("tiny", arch="encoder-decoder", layer_heads=[1, 1])
    with pytest.raises(ValueError, match=r"layer_heads=\['1', '2'\]: expected list\[int\]"):
        ModelConfig(layer_heads=["1", "2"])


@pytest.mark.parametrize("mlp", ["gelu", "swiglu"])
def test_shrinking_equals_gating_the_removed_heads_and_neurons(mlp):
    model = tiny(mlp=mlp, head="cls", n_labels=3)
    ids = torch.randint(0, 50, (2, 7))
    mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2])
    heads, neurons = [[1], [0, 1]], [list(range(0, 128, 2)), list(range(100))]
    small = prune.shrink(model, heads, neurons)
    assert small.config.layer_heads == [1, 2] and small.config.layer_ff == [64, 100]
    # the same function by zeroing: gates on the heads, zero columns of W_2 for the neurons
    gated = prune.shrink(model)  # a copy with the original sizes
    gated.transformer.blocks[0].attn.head_gate = torch.tensor([0.0, 1.0])
    with torch.no_grad():
        for layer, keep in enumerate(neurons):
            fc2 = gated.transformer.blocks[layer].mlp.fc2.weight
            drop = torch.ones(fc2.shape[1], dtype=torch.bool)
            drop[keep] = False
            fc2[:, drop] = 0
    assert torch.allclose(small(ids, mask), gated(ids, mask), atol=1e-5)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())


def test_a_pruned_decoder_saves_loads_and_decodes_like_a_full_recompute(tmp_path):
    model = prune.shrink(tiny("decoder", head="lm"), heads=[[0], [1]], neurons=[list(range(50)), list(range(70))])
    tokenizer = minilm.Tokenizer.train([["a b c d e"]] * 3, kind="bpe", vocab_size=300)
    save_pretrained(tmp_path, model)
    loaded = minilm.from_pretrained(tmp_path)
    assert loaded.config.layer_heads == [1, 1] and loaded.config.layer_ff == [50, 70]
    ids = torch.randint(0, 50, (2, 5))
    assert torch.equal(loaded(ids), model(ids))
    out = generate(loaded, ids, max_new_tokens=6, greedy=True)  # KV cache of 1-head blocks
    step_by_step = ids
    for _ in range(6):  # full recompute
        step_by_step = torch.cat([step_by_step, loaded(step_by_step)[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, step_by_step[:, 5:]) and tokenizer.vocab_size > 0


def test_head_importance_is_the_gradient_of_the_loss_at_the_gates():
    model = tiny(head="cls", n_labels=2)
    with torch.no_grad():
        model.transformer.blocks[1].attn.o_proj.weight[:, 16:] = 0  # head 1 of block 1 writes nothing
    batch = {"input_ids": torch.randint(0, 50, (4, 6)), "attention_mask": torch.ones(4, 6, dtype=torch.long), "labels": torch.tensor([0, 1, 1, 0])}
    scores = prune.head_importance(model, [batch], "cls")
    assert scores[1][1] == 0 and scores[1][0] > 0 and scores[0].min() > 0
    gate = torch.ones(2, requires_grad=True)  # by hand, for block 0
    model.transformer.blocks[0].attn.head_gate = gate
    loss = torch.nn.functional.cross_entropy(model(batch["input_ids"], batch["attention_mask"]), batch["labels"])
    (grad,) = torch.autograd.grad(loss, gate)
    assert torch.allclose(scores[0], grad.abs(), atol=1e-6)
    model.transformer.blocks[0].attn.head_gate = None


def test_keep_heads_ranks_normalised_scores_globally_and_keeps_one_per_block():
    scores = [torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.tensor([10.0, 1.0, 1.0, 1.0])]
    kept = prune.keep_heads(scores, 0.5)  # 4 of 8 go; block 1's scores are large, but normalised per layer
    assert sum(len(k) for k in kept) == 4 and all(kept)
    assert kept[1][0] == 0 and 3 in kept[0]
    assert prune.keep_heads([torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])], 0.99) == [[1], [1]]
    assert prune.keep_neurons([torch.tensor([5.0, 1.0, 3.0, 2.0])], 0.5) == [[0, 2]]


def test_magnitude_masks_global_and_per_layer():
    model = tiny()
    weights = prune.prunable(model)
    assert len(weights) == 12 and all(".blocks." in n for n in weights)  # q, k, v, o, fc1, fc2 of 2 blocks
    prune.apply_masks(model, prune.magnitude_masks(model, 0.5, "layer"))
    report = prune.sparsity_report(model)
    assert all(abs(v - 0.5) < 0.01 for v in report.values())
    model = tiny()
    prune.apply_masks(model, prune.magnitude_masks(model, 0.3, "global"))
    report = prune.sparsity_report(model)
    assert abs(report["all"] - 0.3) < 0.001 and max(report.values()) - min(report.values()) > 0.01  # layers differ


def test_cubic_schedule():
    assert prune.cubic_sparsity(0, 0.8, 10, 110) == 0.0
    assert prune.cubic_sparsity(60, 0.8, 10, 110) == pytest.approx(0.8 - 0.8 * 0.5 ** 3)
    assert prune.cubic_sparsity(110, 0.8, 10, 110) == prune.cubic_sparsity(500, 0.8, 10, 110) == 0.8


@pytest.fixture(scope="module")
def classifier(teacher):
    """(folder, train, dev), the fine-tuned classifier in folder / "cls"."""
    d, tr, dv = teacher
    return d, tr, dv


def test_prune_command_structured_then_recovery(tmp_path, classifier, capsys):
    d, tr, dv = classifier
    small = prune.main(["--ckpt", str(d / "cls"), "--out", str(tmp_path / "pruned"), "--heads", "0.5", "--ffn", "0.5", "--train", str(tr)])
    out = capsys.readouterr().out
    assert sum(small.config.layer_heads) == 2 and min(small.config.layer_heads) >= 1  # half of 2 x 2 heads, one at least per block
    assert small.config.layer_ff == [128, 128] and "parameters" in out
    loaded = minilm.from_pretrained(tmp_path / "pruned")
    assert loaded.config.layer_heads == small.config.layer_heads
    result = finetune.main(["--init", str(tmp_path / "pruned"), "--train", str(tr), "--dev", str(dv), "--out", str(tmp_path / "recovered"),
                            "--epochs", "2", "--lr", "1e-3", "--batch-size", "16", "--teacher", str(d / "cls"), "--device", "cpu", "--dtype", "fp32"])
    assert result["dev"]["accuracy"] >= 0.9
    with pytest.raises(ValueError, match="structurally pruned model"):
        from minilm.interop import hf_files
        hf_files(loaded)


def test_prune_command_unstructured(tmp_path, classifier, capsys):
    d, _, _ = classifier
    report = prune.main(["--ckpt", str(d / "cls"), "--out", str(tmp_path / "sparse"), "--sparsity", "0.4", "--scope", "layer"])
    assert all(abs(v - 0.4) < 0.01 for v in report.values())
    assert prune.sparsity_report(minilm.from_pretrained(tmp_path / "sparse"))["all"] == pytest.approx(report["all"])
    assert "the file stays dense" in capsys.readouterr().out


def test_gradual_pruning_during_fine_tuning_keeps_its_zeros(tmp_path, classifier):
    d, tr, dv = classifier
    result = finetune.main(["--init", str(d / "cls"), "--train", str(tr), "--dev", str(dv), "--out", str(tmp_path / "g"),
                            "--epochs", "2", "--lr", "1e-3", "--batch-size", "16", "--sparsity", "0.6", "--device", "cpu", "--dtype", "fp32"])
    assert result["sparsity"]["all"] == pytest.approx(0.6, abs=0.002)  # exact after the last update: the masks held
    saved = json.loads((tmp_path / "g" / "metrics.json").read_text())
    assert saved["sparsity"]["all"] == result["sparsity"]["all"]
    assert prune.sparsity_report(minilm.from_pretrained(tmp_path / "g"))["all"] == pytest.approx(0.6, abs=0.002)
    assert result["dev"]["accuracy"] >= 0.8


@pytest.mark.parametrize("flags, message", [
    (["--heads", "1.0", "--train", "t.tsv"], "--heads must lie in [0, 1)"),
    (["--sparsity", "-0.1"], "--sparsity must lie in [0, 1)"),
    ([], "nothing to prune"),
    (["--heads", "0.5"], "give --train FILE"),
    (["--heads", "0.5", "--sparsity", "0.5", "--train", "t.tsv"], "separate runs"),
])
def test_bad_pruning_flags(flags, message, capsys):
    with pytest.raises(SystemExit):
        prune.parse_args(["--ckpt", "c", "--out", "o", *flags])
    assert message in capsys.readouterr().err


def test_structured_pruning_needs_a_fine_tuned_head(tmp_path, classifier):
    d, tr, _ = classifier
    save_pretrained(tmp_path / "bare", tiny(), minilm.Tokenizer.load(d / "cls"))
    with pytest.raises(SystemExit) as e:
        prune.main(["--ckpt", str(tmp_path / "bare"), "--out", str(tmp_path / "o"), "--heads", "0.5", "--train", str(tr)])
    assert "structured pruning scores heads by the loss of a fine-tuned" in str(e.value.code)


def test_a_pruned_checkpoint_round_trips_and_quantizes(tmp_path):
    from minilm.inference.quantize import quantize

    model = prune.shrink(tiny(head="cls", n_labels=3), heads=[[0], [0, 1]], neurons=[list(range(60)), list(range(90))])
    save_pretrained(tmp_path, model)
    loaded = minilm.from_pretrained(tmp_path)
    ids = torch.randint(0, 50, (3, 9))
    assert torch.equal(loaded(ids), model(ids))
    q = quantize(minilm.from_pretrained(tmp_path), "int8")
    assert torch.allclose(q(ids), model(ids), atol=0.05)
