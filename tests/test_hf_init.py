"""`--init` of a Hugging Face directory, each script in a fresh process: its config.json is read
through minilm/interop even when nothing else has imported that package yet (in one pytest process
some earlier test always has, which hides the difference)."""

import subprocess
import sys
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parent.parent
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "good", "bad", "film", "plot", "the", "was", "."]


@pytest.fixture
def hf_bert(tmp_path):
    config = transformers.BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=32)
    transformers.BertForMaskedLM(config).save_pretrained(tmp_path / "bert")
    (tmp_path / "bert" / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    rows = ["text\tlabel"] + [f"a {w} film .\t{w}" for w in ("good", "bad") * 8]
    (tmp_path / "train.tsv").write_text("\n".join(rows) + "\n")
    (tmp_path / "corpus.txt").write_text("the film was good .\nthe plot was bad .\n" * 20)
    return tmp_path


@pytest.mark.parametrize("script, args", [
    ("finetune.py", ["--train", "train.tsv", "--max-steps", "2", "--batch-size", "4", "--out", "ft"]),
    ("train.py", ["--data", "corpus.txt", "--max-steps", "2", "--batch-size", "2", "--seq-len", "16", "--out", "pt"]),
])
def test_a_script_starts_from_a_hugging_face_directory(hf_bert, script, args):
    command = [sys.executable, str(ROOT / script), "--init", "bert", "--device", "cpu", "--dtype", "fp32", *args]
    done = subprocess.run(command, cwd=hf_bert, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (hf_bert / args[-1] / "model.safetensors").is_file()
