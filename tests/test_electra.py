"""ELECTRA (minilm/training/electra.py): the generator's size and shared embeddings, the replaced-token labels
and loss parts on hand-made batches, and train.py --objective electra end to end: the loss falls,
the saved directory is a plain encoder that fine-tuning starts from, and --resume restores the
generator too."""

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import finetune
import train
from conftest import tiny_config
from minilm import from_pretrained
from minilm.checkpoint import HELPERS_FILE, load_into, save_checkpoint, save_pretrained
from minilm.model.families import Encoder, build_model
from minilm.objectives import IGNORE_INDEX
from minilm.training.electra import ELECTRA, generator_config, loss, predictions, replace_tokens, sample_categorical, targets
from minilm.training.pretraining import pretraining_targets
from test_scripts import TINY, metrics, word_tokenizer, write_corpus, write_task

PAD, CLS, SEP, MASK = 0, 2, 3, 4  # ids of the hand-made batches (any distinct ids do: nothing here reads a vocabulary)


def electra(seed=0, size=0.25, weight=50.0):
    torch.manual_seed(seed)
    return ELECTRA(build_model(tiny_config("encoder")), size, weight)


def hand_batch():
    """Two rows of real lengths 6 and 4 (then padding); masked: (0, 1) as [MASK], (0, 2) randomised
    to 9, (0, 3) kept, (1, 2) as [MASK]."""
    x = torch.tensor([[CLS, 11, 12, 13, 14, SEP], [CLS, 21, 22, SEP, PAD, PAD]])  # the originals
    inputs = x.clone()
    inputs[0, 1], inputs[0, 2], inputs[1, 2] = MASK, 9, MASK
    labels = torch.full_like(x, IGNORE_INDEX)
    for r, t in [(0, 1), (0, 2), (0, 3), (1, 2)]:
        labels[r, t] = x[r, t]
    return {"input_ids": inputs, "attention_mask": (x != PAD).long(), "labels": labels}, x


# -- the two networks ------------------------------------------------------------------------------
def test_generator_is_narrower_with_the_same_depth_and_the_discriminators_embeddings():
    model = electra(size=0.25)
    d, g = model.discriminator.config, model.generator.config
    assert (g.n_embd, g.n_head, g.n_layer, g.ff_size) == (d.n_embd // 4, 1, d.n_layer, 4 * d.n_embd // 4)
    embed = model.discriminator.transformer.embed
    assert model.generator.transformer.embed.shared is embed  # the module itself: token, position, segment, norm
    assert model.generator.mlm.decoder.weight is embed.token.weight  # the generator's output layer is E_tok
    assert model.generator.transformer.embed.project.weight.shape == (g.n_embd, d.n_embd)
    params = list(model.parameters())
    assert sum(p is embed.token.weight for p in params) == 1  # one Parameter, optimised once
    assert model.generator.mlm(torch.zeros(3, g.n_embd)).shape == (3, d.vocab_size)
    assert isinstance(electra(size=1.0).generator.transformer.embed.project, torch.nn.Identity)  # same width: no projection
    pretrained = build_model(tiny_config("encoder"))
    E = pretrained.transformer.embed.token.weight.detach().clone()
    assert torch.equal(ELECTRA(pretrained).discriminator.transformer.embed.token.weight, E)  # building G never redraws D's embeddings
    assert generator_config(tiny_config("encoder", n_embd=64, n_head=8), 0.5).n_head == 4
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match=rf"generator size {bad}: must lie in \(0, 1\]"):
            generator_config(d, bad)
    with pytest.raises(ValueError, match="ELECTRA pretrains an encoder, not 'decoder'"):
        ELECTRA(build_model(tiny_config("decoder")))


def test_both_losses_reach_the_shared_embeddings_and_none_flows_through_the_sampling():
    model = electra()
    batch, _ = hand_batch()
    E = model.discriminator.transformer.embed.token.weight
    for part in ("mlm", "rtd"):
        model.zero_grad(set_to_none=True)
        loss(model, batch)[part][0].backward()
        assert E.grad is not None and E.grad.abs().sum() > 0, part
        generator_blocks = [p.grad for p in model.generator.transformer.blocks.parameters()]
        if part == "rtd":  # the discriminator's loss reaches the generator through the shared embeddings only
            assert all(g is None or not g.any() for g in generator_blocks)
            assert model.generator.transformer.embed.project.weight.grad is None
        else:
            assert any(g is not None and g.any() for g in generator_blocks)
            assert all(p.grad is None for p in model.discriminator.transformer.blocks.parameters())


# -- labels and losses ----------------------------------------------------------------------------
def test_the_sampler_draws_each_token_with_its_probability_and_never_an_impossible_one():
    p = torch.tensor([[0.0, 0.5, 0.0, 0.3, 0.2, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]])  # (2, 6)
    rows = p.repeat_interleave(20_000, dim=0)  # (40000, 6)
    draws = sample_categorical(rows, torch.Generator().manual_seed(0)).view(2, -1)  # (2, 20000)
    freq = torch.stack([torch.bincount(d, minlength=6) for d in draws]).float() / draws.shape[1]  # (2, 6)
    assert freq[p == 0].sum() == 0  # zero probability: never drawn, first and last token included
    assert torch.allclose(freq, p, atol=0.01)  # 3 standard errors of a frequency at 20,000 draws
    again = sample_categorical(rows, torch.Generator().manual_seed(0)).view(2, -1)
    assert again.equal(draws)  # the same generator state gives the same draws


def test_replaced_tokens_are_the_samples_that_differ_from_the_original():
    batch, x = hand_batch()
    logits = torch.full((4, 40), -1e4)  # the generator "samples" these, one per masked position, row-major
    for i, token in enumerate([11, 30, 31, 22]):  # (0, 1): the original itself; (0, 2), (0, 3): others; (1, 2): the original
        logits[i, token] = 0.0
    corrupt, replaced = replace_tokens(batch["input_ids"], batch["labels"], logits)
    assert corrupt.tolist() == [[CLS, 11, 30, 31, 14, SEP], [CLS, 21, 22, SEP, PAD, PAD]]  # the random 9 is not kept: x^ replaces it
    assert replaced.tolist() == [[0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0]]  # a sample equal to the original is "original"
    assert replace_tokens(x, torch.full_like(x, IGNORE_INDEX), logits[:0])[0].equal(x)  # nothing masked: nothing replaced


def test_loss_parts_are_the_generators_mlm_and_lambda_times_the_discriminators_bce_over_real_tokens():
    model = electra(weight=7.0)
    batch, x = hand_batch()
    torch.manual_seed(1)
    parts = loss(model, batch)
    torch.manual_seed(1)  # the same samples again
    out = predictions(model, batch)
    z, y = out["rtd"]
    mask = batch["attention_mask"].bool()
    assert z.shape == y.shape == (10,)  # 6 + 4 real tokens: the 2 padded positions take no part
    unmasked = (batch["labels"] == IGNORE_INDEX)[mask]
    assert not y[unmasked].any()  # only masked positions can be replaced
    logits, originals = out["mlm"]
    assert logits.shape == (4, model.discriminator.config.vocab_size) and originals.tolist() == [11, 12, 13, 22]
    assert parts["mlm"][1] == 4 and parts["rtd"][1] == 10
    assert targets(batch) == pretraining_targets("electra")(batch) == {"mlm": 4, "rtd": 10}
    # the trainer's division gives exactly L_MLM + lambda L_Disc, each a mean over its own targets
    trained = parts["mlm"][0] / 4 + parts["rtd"][0] / 10
    expected = F.cross_entropy(logits, originals) + 7.0 * F.binary_cross_entropy_with_logits(z, y)
    assert torch.allclose(trained, expected, atol=1e-5)
    # a padded position never changes the loss
    torch.manual_seed(1)
    padded = dict(batch, input_ids=batch["input_ids"].masked_fill(~mask, 17))
    assert torch.allclose(loss(model, padded)["rtd"][0], parts["rtd"][0], atol=1e-4)


# -- checkpoints -----------------------------------------------------------------------------------
def test_a_checkpoint_holds_the_discriminator_as_a_plain_encoder_and_the_rest_beside_it(tmp_path):
    model = electra(seed=0)
    save_checkpoint(tmp_path / "ckpt", model)
    plain = from_pretrained(tmp_path / "ckpt")
    assert isinstance(plain, Encoder) and plain.config.head == "none"
    assert all(torch.equal(plain.state_dict()[k], v) for k, v in model.discriminator.state_dict().items())
    helpers = load_file(tmp_path / "ckpt" / HELPERS_FILE)
    assert {k.split(".")[0] for k in helpers} == {"generator", "rtd"}
    assert not any(k.startswith("generator.transformer.embed.shared.") for k in helpers)  # the shared tensors once, in the model
    other = electra(seed=1)
    load_into(other, tmp_path / "ckpt")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    assert other.generator.mlm.decoder.weight is other.discriminator.transformer.embed.token.weight  # still shared after loading
    save_pretrained(tmp_path / "ckpt", model.discriminator)  # a plain model over it: the helpers of other weights go
    assert not (tmp_path / "ckpt" / HELPERS_FILE).exists()
    with pytest.raises(ValueError, match=f"no {HELPERS_FILE} with the weights trained beside the model"):
        load_into(other, tmp_path / "ckpt")


# -- train.py --objective electra ------------------------------------------------------------------
def run_args(corpus, tokenizer, out, *more):
    return ["--objective", "electra", "--data", str(corpus), "--out", str(out), "--batch-size", "16", "--lr", "3e-3",
            "--val-fraction", "0.1", "--eval-batches", "4", "--tokenizer", str(tokenizer), *TINY, *more]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("electra")
    return write_corpus(d / "corpus.txt"), word_tokenizer(d / "tokenizer.json")


@pytest.fixture(scope="module")
def electra_ckpt(tmp_path_factory, files):
    out = tmp_path_factory.mktemp("electra-run")
    train.main(run_args(*files, out, "--max-steps", "80", "--eval-every", "20"))
    return out


def test_electra_pretraining_learns(electra_ckpt):
    log = metrics(electra_ckpt)
    assert [r["step"] for r in log] == [20, 40, 60, 80]
    first, last = log[0], log[-1]
    assert {"val_loss", "val_ppl", "val_mlm_loss", "val_rtd_loss", "mlm_accuracy", "rtd_accuracy", "rtd_replaced_accuracy",
            "rtd_original_accuracy", "replaced_fraction"} <= set(last)
    assert last["val_loss"] == pytest.approx(last["val_mlm_loss"] + 50 * last["val_rtd_loss"])
    assert last["val_loss"] < first["val_loss"] - 3.0, log
    assert last["val_mlm_loss"] < first["val_mlm_loss"] - 0.2, log
    # the discriminator beats the best constant guess, whose loss is the entropy of the share replaced
    q = last["replaced_fraction"]
    assert 0.02 < q < 0.15, q  # some 15% masked, minus the samples that equal the original
    assert last["val_rtd_loss"] < -(q * math.log(q) + (1 - q) * math.log(1 - q)) - 0.02, last


def test_the_saved_model_is_the_discriminator_and_finetuning_starts_from_it(tmp_path, electra_ckpt, capsys):
    for name in ("model.safetensors", "config.json", "tokenizer.json", HELPERS_FILE, f"checkpoint/{HELPERS_FILE}"):
        assert (electra_ckpt / name).is_file(), name
    assert all(k.startswith("transformer.") for k in load_file(electra_ckpt / "model.safetensors"))
    model = from_pretrained(electra_ckpt)  # strict: every tensor fits, none is left over
    assert isinstance(model, Encoder) and model.config.head == "none" and model.config.n_embd == 64
    d = tmp_path / "task"
    d.mkdir()
    tr, dv = write_task(d / "train.tsv", 64, 1), write_task(d / "dev.tsv", 16, 2)
    capsys.readouterr()
    finetune.main(["--init", str(electra_ckpt), "--train", str(tr), "--dev", str(dv), "--out", str(tmp_path / "cls"),
                   "--max-steps", "3", "--batch-size", "16", "--device", "cpu"])
    out = capsys.readouterr().out
    # the whole backbone comes from the discriminator; only the classification head (and its pooler) is new
    assert f"initialised from {electra_ckpt}; new: classifier.out.bias, classifier.out.weight, pooler.dense.bias, pooler.dense.weight\n" in out
    assert "warning" not in out.lower() and "unexpected" not in out.lower()
    assert from_pretrained(tmp_path / "cls").config.head == "cls"


def test_resume_restores_the_generator(tmp_path, files):
    steady = ["--schedule", "constant", "--warmup", "1", "--save-every", "3", "--eval-every", "3", "--dtype", "fp32"]
    train.main(run_args(*files, tmp_path / "straight", "--max-steps", "6", *steady))
    train.main(run_args(*files, tmp_path / "resumed", "--max-steps", "3", *steady))
    train.main(run_args(*files, tmp_path / "resumed", "--max-steps", "6", "--resume", *steady))
    for name in ("model.safetensors", HELPERS_FILE):
        a, b = load_file(tmp_path / "straight" / name), load_file(tmp_path / "resumed" / name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    assert [(r["step"], r["val_loss"]) for r in metrics(tmp_path / "resumed")] == [(r["step"], r["val_loss"]) for r in metrics(tmp_path / "straight")]


def test_electra_flags_are_checked(capsys):
    for flags, message in [(["--objective", "mlm", "--electra-weight", "10"], "--electra-weight applies to --objective electra only"),
                           (["--objective", "electra", "--electra-generator-size", "0"], "--electra-generator-size must lie in (0, 1], got 0.0"),
                           (["--objective", "electra", "--electra-weight", "-1"], "--electra-weight must be positive, got -1.0"),
                           (["--arch", "decoder", "--objective", "electra"], "--objective electra trains an encoder, not a decoder")]:
        with pytest.raises(SystemExit):
            train.main(flags)
        assert message in capsys.readouterr().err
    args = train.parse_args(["--objective", "electra"])
    assert (args.arch, args.electra_generator_size, args.electra_weight) == ("encoder", 0.25, 50.0)


def test_random_line_rows_reach_the_batches_and_other_objectives_refuse_them(files, tmp_path, monkeypatch, capsys):
    from minilm.data import pretrain

    made = []
    real = pretrain.PretrainBatches.__init__
    monkeypatch.setattr(pretrain.PretrainBatches, "__init__",  # rows: the eighth argument
                        lambda self, *a, **k: made.append(a[7] if len(a) > 7 else k.get("rows")) or real(self, *a, **k))
    train.main(run_args(*files, tmp_path / "r", "--max-steps", "2", "--mlm-rows", "random-lines"))
    assert made == ["random-lines", "random-lines"]  # the training and the held-out batches
    with pytest.raises(SystemExit):
        train.main(["--objective", "mlm+nsp", "--mlm-rows", "random-lines", "--data", str(files[0])])
    assert "--mlm-rows random-lines applies to --objective mlm and electra; mlm+nsp reads consecutive text" in capsys.readouterr().err
