"""Token shards of TinyStories for causal-LM pretraining.

    python data/tinystories/prepare.py                        # download TinyStories-valid.txt (19 MB), hold out 5%
    python data/tinystories/prepare.py --full                 # + TinyStories-train.txt (1.9 GB): the authors' train/valid split
    python data/tinystories/prepare.py --input stories.txt --val-fraction 0.1 --vocab-size 2048 --out /tmp/ts
    python train.py --arch decoder --objective clm --data data/tinystories/shards

TinyStories (Eldan & Li 2023, "TinyStories: How Small Can Language Models Be and Still Speak
Coherent English?") is about 2.1 million short stories written by GPT-3.5 and GPT-4 in the words a
three-to-four-year-old knows. The text files hold one story after another, each ended by a line
`<|endoftext|>`. A document here is one story: its non-empty lines, each cleaned
(minilm/data/corpus.py: NFC, control characters out, whitespace collapsed). Should a line carry
text beside the marker, the text before it ends the story and the text after it begins the next.

Where the stories come from:
  --input FILE [FILE ...]   local files, read in the order given; a story never spans two files.
  none                      TinyStories-valid.txt is downloaded into --cache-dir (once).
  --full                    TinyStories-valid.txt and TinyStories-train.txt are downloaded; the
                            train file becomes the train split and the valid file the val split,
                            as the authors split them (no draw; --val-fraction is not used).
Downloads stream to disk through a temp file with a progress bar; a file already in --cache-dir
is reused. Offline, the error says to pass local files with --input.

Without --full, every story is drawn once, in file order, from random.Random(--seed): it goes to
val with probability --val-fraction, else to train. A byte-level BPE tokenizer (--vocab-size) is
trained on the train stories, then both splits are written to --out with minilm.data.shards. The
files are read twice (tokenizer, then shards) and never held in memory: memory stays flat however
large the corpus.

Expected counts: the 5-story fixture tinystories_sample.txt (25 lines: 5 separators, 2 empty)
gives 5 stories and 18 lines. The full files were not available offline when this recipe was written,
so their counts are not stated here; the summary this script prints and meta.json record them.
"""

import argparse
import http.client
import random
import sys
import time
from pathlib import Path

from tqdm import tqdm

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's minilm, whatever else is installed

from minilm.checkpoint import atomic_write_json  # noqa: E402
from minilm.data.download import cache_dir, download  # noqa: E402
from minilm.data.corpus import clean_line, not_utf8, open_text  # noqa: E402
from minilm.data.shards import write_shards  # noqa: E402
from minilm.tokenizer import Tokenizer  # noqa: E402

URL = "https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main/{name}"
VALID_FILE, TRAIN_FILE = "TinyStories-valid.txt", "TinyStories-train.txt"
SEPARATOR = "<|endoftext|>"


# ----------------------------------------------------------------------------- reading

def read_stories(path, stats=None):
    """Yield the stories of a file, each a list of cleaned non-empty lines. If `stats` (a dict) is
    given it gets the file's counts of stories and kept lines once the file is read to its end."""
    counts = {"stories": 0, "lines": 0}
    story = []
    try:
        with open_text(path) as f:
            for raw in f:
                for k, part in enumerate(raw.split(SEPARATOR)):
                    if k > 0:  # a separator came before this part: the story so far is complete
                        if story:
                            counts["stories"] += 1
                            yield story
                        story = []
                    line = clean_line(part)
                    if line:
                        story.append(line)
                        counts["lines"] += 1
    except UnicodeDecodeError:
        sys.exit(f"error: {not_utf8(path)}")
    if story:  # a last story without a separator after it
        counts["stories"] += 1
        yield story
    if stats is not None:
        stats.update(counts)


def split_stories(inputs, val_fraction, seed, stats=None):
    """Yield (split, story) pairs. `inputs` is a list of (file, split): a file with a split sends
    all its stories there; with None, each story is drawn: val with probability val_fraction.
    The draws come from one random.Random(seed) in story order, so every pass gives the same split.
    stats[file] gets each file's counts (see read_stories)."""
    draw = random.Random(seed)
    stats = stats if stats is not None else {}
    for path, split in inputs:
        stats[str(path)] = {}
        for story in read_stories(path, stats[str(path)]):
            yield split or ("val" if draw.random() < val_fraction else "train"), story


# ----------------------------------------------------------------------------- downloading

def fetch(name, cache_dir):
    url = URL.format(name=name)
    try:
        return download(url, cache_dir / name)
    except (OSError, http.client.HTTPException) as e:  # URLError and timeouts are OSErrors
        sys.exit(f"error: could not download {url} ({e}).\nOffline? Pass local copies of the "
                 f"TinyStories text files instead: --input {VALID_FILE} [more files ...]")


# ----------------------------------------------------------------------------- main

def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Tokenize TinyStories into token shards (train/val) for causal-LM pretraining.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    origin = parser.add_mutually_exclusive_group()
    origin.add_argument("--input", type=Path, nargs="+", default=None, metavar="FILE",
                        help="local TinyStories text files (stories ended by <|endoftext|> lines); "
                             f"without it {VALID_FILE} is downloaded")
    origin.add_argument("--full", action="store_true",
                        help=f"download {TRAIN_FILE} (~1.9 GB) too and use the authors' split: "
                             "train file -> train, valid file -> val")
    parser.add_argument("--val-fraction", type=float, default=0.05,
                        help="share of the stories held out for val by a seeded draw (not used with --full)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the train/val draw")
    parser.add_argument("--out", type=Path, default=HERE / "shards",
                        help="output folder for the token shards, meta.json and tokenizer.json")
    parser.add_argument("--vocab-size", type=int, default=8192,
                        help="size of the byte-level BPE vocabulary trained on the train stories")
    parser.add_argument("--cache-dir", type=Path,
                        default=cache_dir("tinystories"),
                        help="where downloaded files are kept (and reused)")
    args = parser.parse_args(argv)

    if not 0 < args.val_fraction < 1:
        sys.exit(f"error: --val-fraction must be between 0 and 1 (exclusive), got {args.val_fraction}")
    if args.vocab_size < 1:
        sys.exit(f"error: --vocab-size must be positive, got {args.vocab_size}")
    if args.input:
        for path in args.input:
            if not path.is_file():
                sys.exit(f"error: --input {path}: no such file")
        inputs = [(path, None) for path in args.input]
    elif args.full:
        inputs = [(fetch(TRAIN_FILE, args.cache_dir), "train"), (fetch(VALID_FILE, args.cache_dir), "val")]
    else:
        inputs = [(fetch(VALID_FILE, args.cache_dir), None)]

    t0 = time.perf_counter()
    stories = tqdm(split_stories(inputs, args.val_fraction, args.seed), desc="training the tokenizer", unit="story", leave=False)
    train_lines = (line for split, story in stories if split == "train" for line in story)
    tokenizer = Tokenizer.train(train_lines, kind="bpe", vocab_size=args.vocab_size)
    stats = {}
    source = {"dataset": "TinyStories", "files": [str(path.resolve()) for path, _ in inputs],
              "split": "authors' train/valid files" if args.full else "seeded draw per story",
              "val_fraction": None if args.full else args.val_fraction, "seed": args.seed,
              "kind": "bpe", "vocab_size": args.vocab_size}
    meta = write_shards(args.out, split_stories(inputs, args.val_fraction, args.seed, stats), tokenizer, source=source)
    total = sum(s["stories"] for s in stats.values())
    for split in ("train", "val"):
        if meta["splits"].get(split, {}).get("documents", 0) == 0:
            (args.out / "meta.json").unlink()  # not a usable shard directory
            sys.exit(f"error: the {split} split is empty ({total} stories in {', '.join(stats)}); "
                     + ("raise --val-fraction" if split == "val" else "lower --val-fraction"))
    meta["source"]["file_counts"] = stats
    atomic_write_json(args.out / "meta.json", meta)

    for path, counts in stats.items():
        print(f"{path}: {counts['stories']:,} stories, {counts['lines']:,} lines")
    for split, n in meta["splits"].items():
        print(f"{split}: {n['documents']:,} stories, {n['lines']:,} lines, {n['tokens']:,} tokens")
    print(f"wrote {args.out} (vocabulary {tokenizer.vocab_size:,}) in {time.perf_counter() - t0:.1f}s")
    print(f"train with: python train.py --arch decoder --objective clm --data {args.out}")
    return meta


if __name__ == "__main__":
    main()
