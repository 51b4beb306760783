"""Text-to-text fine-tuning: the labels of sft (response only) and seq2seq (shifted targets),
chrF against sacreBLEU, and `finetune.py --task sft / seq2seq` learning a word -> kind mapping."""

import json
import random

import pytest

import finetune
from minilm.data.tasks import Example
from minilm.data.text_to_text import PROMPT_END, Seq2SeqData, SFTData
from minilm.metrics import chrf
from minilm.objectives import IGNORE_INDEX
from minilm.tokenizer import SPECIAL_TOKENS, Tokenizer

from test_scripts import TINY, TOPICS


@pytest.fixture(scope="module")
def tok():
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    return Tokenizer.from_vocab([*SPECIAL_TOKENS, "say", "hi", "yo", *letters, *("##" + c for c in letters)])


def test_sft_trains_on_the_response_and_eos_only(tok):
    data = SFTData([Example("say hi", None, "yo", "x:1")], tok, max_len=16, batch_size=1)
    p, r = tok.encode("say hi" + PROMPT_END, add_special=False), tok.encode("yo", add_special=False)
    batch = data.batch(0)
    assert batch["input_ids"].tolist() == [p + r]  # the last token ([EOS]) is only a target
    assert batch["labels"].tolist() == [[IGNORE_INDEX] * (len(p) - 1) + r + [tok.eos_id]]
    assert data.prompts == [p]


def test_sft_keeps_the_end_of_a_long_prompt(tok):
    data = SFTData([Example("say " * 20 + "hi", None, "yo " * 20, "x:1")], tok, max_len=10, batch_size=1)
    assert len(data.ids[0]) <= 10
    assert data.prompts[0][-1] == tok.token_to_id("hi") and len(data.prompts[0]) == 5  # the last max_len // 2 tokens
    labels = data.token_labels[0]
    assert labels[: len(data.prompts[0]) - 1] == [IGNORE_INDEX] * (len(data.prompts[0]) - 1)


def test_seq2seq_targets_are_shifted_right(tok):
    data = Seq2SeqData([Example("say hi", None, "yo", "x:1")], tok, max_len=16, batch_size=1)
    batch = data.batch(0)
    yo = tok.encode("yo", add_special=False)
    assert batch["input_ids"].tolist() == [tok.encode("say hi", add_special=False) + [tok.eos_id]]
    assert batch["labels"].tolist() == [yo + [tok.eos_id]]
    assert batch["decoder_input_ids"].tolist() == [[tok.bos_id] + yo]


def test_chrf_matches_sacrebleu():
    sacrebleu = pytest.importorskip("sacrebleu.metrics")
    rng = random.Random(0)
    words = "the cat sat on a mat dog ran far hello there x".split()
    hyps = [" ".join(rng.choices(words, k=rng.randint(0, 8))) for _ in range(200)]
    refs = [" ".join(rng.choices(words, k=rng.randint(1, 8))) for _ in range(200)]
    assert chrf(hyps, refs) == pytest.approx(sacrebleu.CHRF().corpus_score(hyps, [refs]).score, abs=1e-9)
    assert chrf(["same words"], ["same words"]) == pytest.approx(100.0)
    assert chrf(["zzz"], ["abc"]) == 0.0


def write_pairs(path, n, seed, keys):
    """Up to three words of the test topics -> their topics, as JSONL with the two given keys."""
    rng = random.Random(seed)
    words = [(w, t) for t, ws in TOPICS.items() for w in ws]
    rows = []
    for _ in range(n):
        chosen = rng.sample(words, rng.randint(1, 3))
        rows.append(json.dumps({keys[0]: "kinds of " + " ".join(w for w, _ in chosen), keys[1]: " ".join(t for _, t in chosen)}))
    path.write_text("\n".join(rows) + "\n")
    return path


def test_finetune_sft_learns_from_responses(tmp_path, capsys):
    tr, dv = write_pairs(tmp_path / "train.jsonl", 600, 1, ("prompt", "response")), write_pairs(tmp_path / "dev.jsonl", 60, 2, ("prompt", "response"))
    result = finetune.main(["--task", "sft", "--init", "scratch", "--train", str(tr), "--dev", str(dv), "--out", str(tmp_path / "o"),
                            "--epochs", "20", "--lr", "3e-3", "--batch-size", "16", *TINY, "--vocab-size", "400"])
    dev = result["dev"]
    assert dev["exact_match"] >= 0.5 and dev["chrf"] >= 60 and dev["perplexity"] < 2.0
    assert "model: decoder with a lm head" in capsys.readouterr().out
    saved = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert saved["dev"]["examples"][0].keys() == {"output", "reference"}


def test_finetune_seq2seq_columns_and_learning(tmp_path, capsys):
    keys = ("src", "tgt")
    tr, dv = write_pairs(tmp_path / "train.jsonl", 600, 1, keys), write_pairs(tmp_path / "dev.jsonl", 60, 2, keys)
    result = finetune.main(["--task", "seq2seq", "--init", "scratch", "--train", str(tr), "--dev", str(dv), "--source-col", "src",
                            "--target-col", "tgt", "--out", str(tmp_path / "o"), "--epochs", "6", "--lr", "3e-3", "--batch-size", "16",
                            *TINY, "--vocab-size", "400"])
    log = [json.loads(line) for line in (tmp_path / "o" / "metrics.jsonl").read_text().splitlines()]
    assert log[-1]["dev_loss"] < 0.6 * log[0]["dev_loss"] or log[-1]["dev_loss"] < 1.0
    assert result["dev"]["token_accuracy"] > 0.4  # four kinds: a quarter by chance
    assert "model: encoder-decoder with a lm head" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"no field 'source'"):
        finetune.main(["--task", "seq2seq", "--init", "scratch", "--train", str(tr), "--out", str(tmp_path / "x"), *TINY, "--vocab-size", "400"])


def test_finetune_sft_refuses_an_encoder_checkpoint(tmp_path):
    from test_scripts import write_task

    tr = write_pairs(tmp_path / "train.jsonl", 20, 1, ("prompt", "response"))
    enc = tmp_path / "enc"
    finetune.main(["--init", "scratch", "--train", str(write_task(tmp_path / "t.tsv", 40, 1)), "--out", str(enc), "--max-steps", "1", *TINY])
    with pytest.raises(SystemExit, match=r"--task sft fine-tunes a decoder model; --init .* is an encoder"):
        finetune.main(["--task", "sft", "--init", str(enc), "--train", str(tr), "--out", str(tmp_path / "o"), "--device", "cpu"])


def test_finetune_sft_names_the_missing_eos_of_the_checkpoints_tokenizer(tmp_path):
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers

    from conftest import tiny_model
    from minilm.checkpoint import save_pretrained
    from minilm.tokenizer import Tokenizer

    words = ["[UNK]", "[PAD]", "kinds", "of", *{w for ws in TOPICS.values() for w in ws}, *TOPICS]
    backend = HFTokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.add_special_tokens(["[UNK]", "[PAD]"])
    tokenizer = Tokenizer(backend)  # no EOS: an SFT target cannot end
    save_pretrained(tmp_path / "gpt", tiny_model("decoder", head="lm", vocab_size=tokenizer.vocab_size), tokenizer)
    tr = write_pairs(tmp_path / "train.jsonl", 20, 1, ("prompt", "response"))
    with pytest.raises(SystemExit, match=r"^error: .*gpt: a generated answer \(it ends with EOS\) needs the tokenizer's EOS"):
        finetune.main(["--task", "sft", "--init", str(tmp_path / "gpt"), "--train", str(tr), "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert not (tmp_path / "o" / "model.safetensors").exists()
