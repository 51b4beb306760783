"""minilm's shipped checkpoints (minilm/pretrained): they load by name from any folder, give the
logits their model card stores, stay within the size limit, and are what finetune.py starts from."""

import json
from pathlib import Path

import pytest
import torch

import minilm
from minilm import pretrained
from minilm.pretrained.export import export, probe

ROOT = Path(__file__).resolve().parent.parent
MAX_BYTES = 25 * 1024 * 1024


def test_the_encoder_and_the_decoder_are_shipped():
    assert {"minilm-mini", "minilm-mini-decoder"} <= set(pretrained.names())
    assert minilm.from_pretrained("minilm-mini-decoder").config.arch == "decoder"


def test_infer_generates_and_fills_masks_with_the_shipped_models_by_default(tmp_path, monkeypatch, capsys):
    import infer

    monkeypatch.chdir(tmp_path)  # no runs/ folder here: the shipped checkpoints answer
    infer.main(["generate", "--prompt", "a domestic animal that", "--greedy", "--max-new-tokens", "5", "--json"])
    out = json.loads(capsys.readouterr().out)
    model, tokenizer = minilm.from_pretrained("minilm-mini-decoder"), minilm.Tokenizer.load("minilm-mini-decoder")
    first = probe(model, tokenizer, "a domestic animal that")["top5_ids"][0]
    assert out["tokens"][0] == first and len(out["tokens"]) == 5  # greedy: the probe's best next token, then four more
    infer.main(["fill-mask", "a domestic [MASK] that barks", "--json"])
    card = json.loads((pretrained.HERE / "minilm-mini" / "card.json").read_text())
    assert json.loads(capsys.readouterr().out.splitlines()[0])["masks"][0][0]["token"] == card["probe"]["top5"][0]


@pytest.mark.parametrize("name", pretrained.names())
def test_loads_by_name_from_any_folder_and_reproduces_its_card(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the name does not depend on the working directory
    model = minilm.from_pretrained(name)
    tokenizer = minilm.Tokenizer.load(name)
    card = json.loads((pretrained.HERE / name / "card.json").read_text())
    assert model.config.vocab_size == tokenizer.vocab_size
    assert sum(p.numel() for p in model.parameters()) == card["parameters"]
    assert all(p.dtype == torch.float32 for p in model.parameters())  # stored in half precision, loaded as float32
    got = probe(model, tokenizer, card["probe"]["text"])
    assert got["position"] == card["probe"]["position"]
    stored = card["probe"]
    torch.testing.assert_close(got["logits"][: len(stored["first_logits"])], torch.tensor(stored["first_logits"]), atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(got["logits"][stored["top5_ids"]], torch.tensor(stored["top5_logits"]), atol=2e-3, rtol=1e-3)
    assert got["top5_ids"][0] == stored["top5_ids"][0]  # (the order of near-equal logits below the first may differ between CPUs)


@pytest.mark.parametrize("name", pretrained.names())
def test_size_and_files(name):
    folder = pretrained.HERE / name
    for file in ("model.safetensors", "config.json", "tokenizer.json", "README.md", "card.json"):
        assert (folder / file).is_file(), file
    assert (folder / "model.safetensors").stat().st_size <= MAX_BYTES


def test_a_local_folder_of_the_same_name_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert pretrained.shipped("minilm-mini") == pretrained.HERE / "minilm-mini"
    (tmp_path / "minilm-mini").mkdir()
    assert pretrained.shipped("minilm-mini") is None
    assert pretrained.shipped("no-such-model") is None
    with pytest.raises(FileNotFoundError, match="not a minilm checkpoint"):
        minilm.from_pretrained("minilm-mini")  # the empty local folder, not the shipped one


def test_export_rounds_to_half_precision_and_records_the_probe(tmp_path):
    from conftest import tiny_model
    from minilm.checkpoint import save_pretrained
    from minilm.tokenizer import Tokenizer

    tokenizer = Tokenizer.train(["a domestic dog that barks", "a small cat that purrs"] * 20, kind="wordpiece", vocab_size=60)
    model = tiny_model("encoder", head="mlm", vocab_size=tokenizer.vocab_size, seed=3)
    save_pretrained(tmp_path / "run", model, tokenizer)
    card = export(tmp_path / "run", "tiny", "fp16", tmp_path / "tiny")
    from safetensors.torch import load_file

    assert {t.dtype for t in load_file(tmp_path / "tiny" / "model.safetensors").values()} == {torch.float16}
    assert 0 < card["rounding_max_logit_change"] < 1e-2
    again = probe(minilm.from_pretrained(tmp_path / "tiny"), tokenizer)
    assert again["logits"][:8].tolist() == card["probe"]["first_logits"]


def test_export_probes_a_decoder_with_its_next_token_logits(tmp_path):
    from conftest import tiny_model
    from minilm.checkpoint import save_pretrained
    from minilm.tokenizer import Tokenizer

    tokenizer = Tokenizer.train(["a domestic animal that barks", "a small animal that purrs"] * 20, kind="bpe", vocab_size=80)
    model = tiny_model("decoder", head="lm", vocab_size=tokenizer.vocab_size, seed=4)
    save_pretrained(tmp_path / "run", model, tokenizer)
    card = export(tmp_path / "run", "tiny-gpt", "fp16", tmp_path / "tiny-gpt")
    ids = tokenizer.encode("a domestic animal that", add_special=False)
    assert card["probe"]["position"] == len(ids) - 1
    with torch.no_grad():
        want = minilm.from_pretrained(tmp_path / "tiny-gpt")(torch.tensor([ids]))[0, -1]  # (V,): the last position's next-token logits
    assert card["probe"]["first_logits"] == want[:8].tolist()


def test_finetune_starts_from_the_shipped_encoder_by_default(tmp_path, capsys):
    import finetune

    rows = ["text\tlabel"] + [f"a {w} that barks\tdog" for w in ("dog", "hound", "puppy")] + [f"a {w} that purrs\tcat" for w in ("cat", "kitten", "tabby")]
    (tmp_path / "train.tsv").write_text("\n".join(rows) + "\n")
    results = finetune.main(["--train", str(tmp_path / "train.tsv"), "--max-steps", "1", "--batch-size", "2", "--out", str(tmp_path / "out")])
    assert Path(results["init"]) == pretrained.HERE / "minilm-mini"
    assert "minilm's shipped encoder" in capsys.readouterr().out
