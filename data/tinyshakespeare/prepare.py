"""tiny-shakespeare at the character level: token shards for causal-LM pretraining.

    python data/tinyshakespeare/prepare.py                         # downloads input.txt (1.1 MB)
    python data/tinyshakespeare/prepare.py --input path/to/input.txt
    python train.py --arch decoder --objective clm --data data/tinyshakespeare/shards \\
        --n-layer 4 --n-head 4 --n-embd 128 --seq-len 64 --batch-size 12 --max-steps 2000 \\
        --lr 1e-3 --warmup 100 --eval-every 250 --eval-batches 20

The text (Karpathy's char-rnn collection of Shakespeare's plays, 1,115,394 characters, 65 distinct)
becomes one stream of character ids, newlines included, cut as char-rnn and nanoGPT cut it: the
first 90% of the characters for training (1,003,854), the last 10% for validation (111,540).
Each split is written as one document, so the stream is the text itself (plus one [EOS] at the end).
The vocabulary is minilm's special tokens and the 65 characters (104 ids); no special token occurs
in the text.
"""

import argparse
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

from minilm.data.shards import write_shards  # noqa: E402
from minilm.tokenizer import Tokenizer  # noqa: E402

URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
HERE = Path(__file__).resolve().parent
EXPECTED = {"characters": 1_115_394, "distinct": 65, "train": 1_003_854, "val": 111_540}


def read_text(path: Path | None) -> str:
    if path is not None:
        if not path.is_file():
            sys.exit(f"error: --input {path}: no such file")
        return path.read_text(encoding="utf-8")
    print(f"downloading {URL}")
    try:
        with urllib.request.urlopen(URL, timeout=60) as r:
            return r.read().decode("utf-8")
    except OSError as e:
        sys.exit(f"error: could not download {URL} ({e}); pass a local copy with --input")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", type=Path, help="a local input.txt (default: download it)")
    p.add_argument("--out", type=Path, default=HERE / "shards", help="shard directory (default: %(default)s)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="the final share of characters held out (default: %(default)s)")
    args = p.parse_args(argv)
    text = read_text(args.input)
    n_train = int(len(text) * (1 - args.val_fraction))
    tokenizer = Tokenizer.from_chars(set(text))
    splits = [("train", text[:n_train].split("\n")), ("val", text[n_train:].split("\n"))]
    meta = write_shards(args.out, splits, tokenizer, source={"url": URL, "characters": len(text), "val_fraction": args.val_fraction})
    counts = {s: meta["splits"][s]["tokens"] - 1 for s in ("train", "val")}  # less the final [EOS]
    print(f"{len(text):,} characters, {len(set(text))} distinct; train {counts['train']:,}, val {counts['val']:,} "
          f"(vocabulary {tokenizer.vocab_size} with the special tokens) -> {args.out}")
    if args.input is None and (len(text), counts["train"]) != (EXPECTED["characters"], EXPECTED["train"]):
        print(f"warning: expected {EXPECTED}; the download differs from the known file")
    return meta


if __name__ == "__main__":
    main()
