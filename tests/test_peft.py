"""Parameter-efficient fine-tuning: LoRA and bottleneck adapters start as the pretrained model,
train only their own weights (and the new head), save only those, and a LoRA checkpoint merges
into a plain model that computes the same function."""

import json

import pytest
import torch
from torch import nn

import finetune
from minilm import peft
from minilm.checkpoint import from_pretrained, load_adapter, save_pretrained
from minilm.peft.adapters import AdapterLinear
from minilm.peft.lora import LoRALinear
from minilm.training.finetuning import init_model

from conftest import tiny_config, tiny_model
from test_scripts import TINY, corpus, encoder_ckpt, word_tokenizer, write_task  # noqa: F401 (fixtures)


def test_lora_linear_starts_as_base_and_merges_exactly():
    torch.manual_seed(0)
    base = nn.Linear(6, 5).double()
    lora = LoRALinear(base, r=2, alpha=4.0).double()
    x = torch.randn(3, 6, dtype=torch.float64)
    assert torch.equal(lora(x), base(x))  # B = 0
    with torch.no_grad():
        lora.lora_B.normal_()
    expected = base(x) + 2.0 * (x @ lora.lora_A.T @ lora.lora_B.T)  # alpha / r = 2
    torch.testing.assert_close(lora(x), expected)
    torch.testing.assert_close(lora.merge()(x), lora(x))
    assert torch.autograd.gradcheck(lambda a, b: (x @ a.T @ b.T).sum(), (lora.lora_A.detach().requires_grad_(), lora.lora_B.detach().requires_grad_()))


def test_adapter_starts_as_identity():
    torch.manual_seed(0)
    base = nn.Linear(8, 8)
    adapter = AdapterLinear(base, size=3)
    x = torch.randn(2, 8)
    assert torch.equal(adapter(x), base(x))
    with torch.no_grad():
        adapter.up.weight.normal_()
    assert not torch.allclose(adapter(x), base(x))


@pytest.mark.parametrize("method", ["lora", "adapter"])
def test_apply_freezes_all_but_adapter_and_head(method):
    model = tiny_model("encoder", head="cls", n_labels=3)
    ids = torch.randint(5, 53, (2, 7))
    before = model(ids)
    spec = peft.PeftSpec(method, "unused", r=4, targets=["q_proj", "v_proj"], adapter_size=4,
                         trainable=["classifier.out.weight", "classifier.out.bias"])
    peft.apply(model, spec)
    assert torch.equal(model(ids), before)  # the adapter starts as the identity
    trained = set(peft.trained_tensors(model))
    marker = ("lora_A", "lora_B") if method == "lora" else (".down.", ".up.")
    norms = {n for n in dict(model.named_parameters()) if "norm" in n} if method == "adapter" else set()
    assert trained == {n for n, _ in model.named_parameters() if any(m in n for m in marker)} | set(spec.trainable) | norms


def test_spec_rejects_unknown_method_and_target():
    with pytest.raises(ValueError, match="unknown parameter-efficient method 'ia3'"):
        peft.PeftSpec("ia3", "x")
    with pytest.raises(ValueError, match="LoRA target 'query' is not a projection"):
        peft.PeftSpec("lora", "x", targets=["query"])


@pytest.fixture
def base_ckpt(tmp_path):
    """A small "pretrained" encoder checkpoint (random weights) with a word-level tokenizer."""
    out = tmp_path / "base"
    tok = word_tokenizer(tmp_path / "tokenizer.json")
    from minilm.tokenizer import Tokenizer

    tokenizer = Tokenizer.load(tmp_path / "tokenizer.json")
    torch.manual_seed(0)
    from minilm.model.families import build_model

    model = build_model(tiny_config("encoder", head="mlm", vocab_size=tokenizer.vocab_size, n_embd=64, max_seq_len=32))
    save_pretrained(out, model, tokenizer)
    assert tok.exists()
    return out


def test_lora_checkpoint_holds_only_adapter_and_merges_to_same_function(tmp_path, base_ckpt):
    config = from_pretrained(base_ckpt).config.replace(head="cls", n_labels=4, labels=list("abcd"))
    model, new = init_model(config, base_ckpt)
    spec = peft.PeftSpec("lora", str(base_ckpt), r=4, alpha=8, targets=["q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"], trainable=new)
    peft.apply(model, spec)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.normal_(std=0.1)  # as if trained
    save_pretrained(tmp_path / "adapted", model)
    files = sorted(p.name for p in (tmp_path / "adapted").iterdir())
    assert files == ["adapter.safetensors", "adapter_config.json", "config.json"]
    assert json.loads((tmp_path / "adapted" / "adapter_config.json").read_text())["base"] == str(base_ckpt)

    ids = torch.randint(5, 40, (3, 9))
    model.eval()
    expected = model(ids)
    merged = from_pretrained(tmp_path / "adapted")
    assert not any(isinstance(m, LoRALinear) for m in merged.modules()) and getattr(merged, "peft", None) is None
    torch.testing.assert_close(merged(ids), expected, atol=1e-5, rtol=1e-5)
    unmerged = load_adapter(tmp_path / "adapted").eval()
    assert torch.equal(unmerged(ids), expected)


def test_adapter_checkpoint_names_a_missing_base(tmp_path, base_ckpt):
    config = from_pretrained(base_ckpt).config.replace(head="cls", n_labels=2, labels=["a", "b"])
    model, new = init_model(config, base_ckpt)
    peft.apply(model, peft.PeftSpec("adapter", str(tmp_path / "gone"), adapter_size=4, trainable=new))
    save_pretrained(tmp_path / "adapted", model)
    with pytest.raises(FileNotFoundError, match=r"its base checkpoint .*gone is not there"):
        from_pretrained(tmp_path / "adapted")


# LoRA changes what [CLS] attends to; adapters work position by position on a frozen attention
# pattern, so on this tiny backbone they learn more slowly (chance is 0.25)
# (prefix tuning cannot move this backbone's nearly constant [CLS] state: it is checked for saving and
# reloading here, and for learning in test_prefix_fits_a_batch_better_than_the_head_alone)
@pytest.mark.parametrize("method, lr, least", [("lora", "5e-3", 0.9), ("adapter", "2e-2", 0.6), ("prefix", "1e-2", None)])
def test_finetune_peft_trains_a_few_percent_and_saves_the_adapter(tmp_path, encoder_ckpt, method, lr, least, capsys):
    tr, dv = write_task(tmp_path / "train.tsv", 400, 1), write_task(tmp_path / "dev.tsv", 80, 2)
    result = finetune.main(["--init", str(encoder_ckpt), "--train", str(tr), "--dev", str(dv), "--out", str(tmp_path / "o"), "--peft", method,
                            "--lora-r", "4", "--adapter-size", "8", "--prefix-length", "4", "--epochs", "8", "--lr", lr, "--batch-size", "16", "--device", "cpu",
                            "--pooling", "cls", "--dropout", "0.1", "--dtype", "fp32"])
    out = capsys.readouterr().out
    share = float(out.split(" trained (")[1].split("%")[0])
    assert 0 < share < 25
    assert (tmp_path / "o" / "adapter.safetensors").exists() and not (tmp_path / "o" / "model.safetensors").exists()
    if least is not None:
        assert result["dev"]["accuracy"] >= least
    reloaded = finetune.evaluate_task("cls", from_pretrained(tmp_path / "o"), finetune_dev(tmp_path / "o", dv), result["labels"])
    assert reloaded["accuracy"] == pytest.approx(result["dev"]["accuracy"], abs=1e-9)


def finetune_dev(ckpt, dev_path):
    """The dev set encoded with the checkpoint's tokenizer, as finetune.py encodes it."""
    from minilm.data.tasks import ClassificationData, label_ids, read_examples
    from minilm.tokenizer import Tokenizer

    labels = from_pretrained(ckpt).config.labels
    examples = read_examples(dev_path)
    return ClassificationData(examples, Tokenizer.load(ckpt), label_ids(examples, labels), 32, 128)


def test_finetune_peft_needs_a_pretrained_init(tmp_path):
    tr = write_task(tmp_path / "train.tsv", 20, 1)
    with pytest.raises(SystemExit):
        finetune.main(["--init", "scratch", "--train", str(tr), "--out", str(tmp_path / "o"), "--peft", "lora", *TINY])


# -- prefix tuning ------------------------------------------------------------------------------------
def with_prefix(arch, **changes):
    model = tiny_model(arch, **changes)
    peft.apply(model, peft.PeftSpec("prefix", "unused", prefix_length=3))
    return model.eval()


def test_prefix_changes_the_output_and_respects_padding():
    model = with_prefix("encoder", head="none")
    ids = torch.randint(5, 53, (1, 6))
    padded = torch.cat([ids, torch.zeros(1, 2, dtype=torch.long)], dim=1)
    mask = torch.tensor([[1] * 6 + [0] * 2])
    out = model(ids)
    torch.testing.assert_close(model(padded, mask)[:, :6], out)  # the pads are masked, the prefix is not
    model.transformer.prefix = None
    assert not torch.allclose(model(ids), out)


def test_prefix_decoder_cached_generation_equals_full_forward():
    from minilm.inference.generate import generate

    model = with_prefix("decoder")
    prompt = torch.randint(5, 53, (2, 4))
    new = generate(model, prompt, max_new_tokens=6, greedy=True)
    seq = prompt
    for _ in range(6):  # no cache: the whole sequence each step
        seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(new, seq[:, 4:])


def test_prefix_trains_only_the_prefix_and_round_trips(tmp_path, base_ckpt):
    config = from_pretrained(base_ckpt).config.replace(head="cls", n_labels=2, labels=["a", "b"])
    model, new = init_model(config, base_ckpt)
    peft.apply(model, peft.PeftSpec("prefix", str(base_ckpt), prefix_length=4, trainable=new))
    assert set(peft.trained_tensors(model)) == {"transformer.prefix.keys", "transformer.prefix.values", *new}
    save_pretrained(tmp_path / "p", model)
    ids = torch.randint(5, 40, (2, 7))
    torch.testing.assert_close(from_pretrained(tmp_path / "p")(ids), model.eval()(ids))


def test_prefix_fits_a_batch_better_than_the_head_alone():
    """200 Adam steps on one batch of 16 random sequences with 4 labels: a 4-token prefix plus the
    head fits it far better than the head on the frozen model alone."""
    ids = torch.randint(5, 53, (16, 8), generator=torch.Generator().manual_seed(1))
    labels = torch.arange(16) % 4
    head = ["classifier.out.weight", "classifier.out.bias"]
    final = {}
    for method in ("prefix", "head only"):
        model = tiny_model("encoder", head="cls", n_labels=4)
        if method == "prefix":
            peft.apply(model, peft.PeftSpec("prefix", "unused", prefix_length=4, trainable=head))
        else:
            for name, p in model.named_parameters():
                p.requires_grad_(name in head)
        model.train()
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        for _ in range(200):
            loss = torch.nn.functional.cross_entropy(model(ids), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
        final[method] = loss.item()
    assert final["prefix"] < 0.5 * final["head only"] and final["prefix"] < 0.4
