"""Token shards of WikiText-2 (v1, the tokenised wiki.*.tokens files) for causal-LM pretraining.

    python data/wikitext2/prepare.py                          # download train/valid/test, shards in data/wikitext2/shards
    python data/wikitext2/prepare.py --train wiki.train.tokens --val wiki.valid.tokens --test wiki.test.tokens
    python data/wikitext2/prepare.py --val valid.txt --vocab-size 2048 --out /tmp/wt2   # no train file: a smoke test
    python train.py --arch decoder --objective clm --data data/wikitext2/shards

WikiText-2 (Merity et al. 2016, "Pointer Sentinel Mixture Models") is 720 Wikipedia Good and
Featured articles, already word-tokenised: rare words are `<unk>`, numbers are split as `1 @,@ 000`
and `0 @.@ 7`. A document here is one article. A line ` = Title = ` (one '=' on each side) that
follows an empty line, or opens the file, starts a new article; sub-headings (` = = History = = `)
stay inside it. The empty-line condition is needed: two equation fragments in test.txt
(` = 1 <unk> / s and a nominal <unk> k = `) look like titles but continue a paragraph. Empty lines
are dropped, every other line is cleaned (minilm/data/corpus.py: NFC, whitespace collapsed) and
kept as one line of its article, headings included. `<unk>` stays literal text.

Where the files come from:
  --train/--val (and --test)  local files. With both --train and --val, each file is its split.
                              With only one of them (the repository copies of WikiText-2 often
                              lack the 10.8 MB train file), that file is split by articles: every
                              10th article (the 10th, 20th, ...) goes to val, the rest to train.
                              A warning says so: such shards are a smoke test, and their val
                              numbers are not comparable with published WikiText-2 results.
  none of them                train.txt, valid.txt and test.txt are downloaded from pytorch/examples
                              (URL below) into --cache-dir, once; offline, the error says to pass
                              local files.
A byte-level BPE tokenizer (--vocab-size) is trained on the train split only, then every split is
written to --out with minilm.data.shards (train, val, and test when a test file is given or
downloaded). Files are read twice (tokenizer, then shards), never held in memory.

Expected counts (`<eos>` = the one end-of-line token per line, counted by the standard numbers):
  file        lines    tokens incl. <eos>   articles   non-empty lines
  valid.txt   3,760      217,646                60        2,461          (measured)
  test.txt    4,358      245,569                60        2,891          (measured)
  train.txt  36,718    2,088,628               600           ?           (published, not measured here)
With `--val valid.txt` alone the split is 54 train / 6 val articles (2,313 / 148 lines).
"""

import argparse
import http.client
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's minilm, whatever else is installed

from minilm.checkpoint import atomic_write_json  # noqa: E402
from minilm.data.download import cache_dir, download  # noqa: E402
from minilm.data.corpus import clean_line, not_utf8, open_text  # noqa: E402
from minilm.data.shards import write_shards  # noqa: E402
from minilm.tokenizer import Tokenizer  # noqa: E402

URL = "https://raw.githubusercontent.com/pytorch/examples/main/word_language_model/data/wikitext-2/{name}.txt"
DOWNLOADS = {"train": "train", "val": "valid", "test": "test"}  # split -> file name in pytorch/examples
# The standard files' sizes: (lines, whitespace tokens + one <eos> per line).
STANDARD = {"train": (36_718, 2_088_628), "val": (3_760, 217_646), "test": (4_358, 245_569)}
HEADING = re.compile(r"\s*= (?!=).*(?<!=) =\s*")  # ' = Title = ', not ' = = Section = = '
EVERY = 10  # with a single file, every EVERY-th article is held out for val


# ----------------------------------------------------------------------------- reading

def read_articles(path, stats=None):
    """Yield the articles of a WikiText file, each a list of cleaned non-empty lines.

    If `stats` (a dict) is given, it gets the file's raw counts: lines (empty ones included),
    tokens (whitespace-separated words plus one <eos> per line, the standard way to count),
    articles and kept (non-empty) lines.
    """
    counts = {"lines": 0, "tokens": 0, "articles": 0, "kept_lines": 0}
    article, previous_empty = [], True
    try:
        with open_text(path) as f:
            for raw in f:
                raw = raw.rstrip("\r\n")
                counts["lines"] += 1
                counts["tokens"] += len(raw.split()) + 1
                if previous_empty and HEADING.fullmatch(raw):
                    counts["articles"] += 1
                    if article:
                        yield article
                    article = []
                line = clean_line(raw)
                previous_empty = not line
                if line:
                    article.append(line)
                    counts["kept_lines"] += 1
    except UnicodeDecodeError:
        sys.exit(f"error: {not_utf8(path)}")
    if counts["articles"] == 0:
        sys.exit(f"error: {path}: no article title line (' = Title = ' after an empty line); "
                 "is this a WikiText file?")
    if article:
        yield article
    if stats is not None:
        stats.update(counts)


def split_articles(files, stats=None):
    """Yield (split, article) pairs. `files` maps a split name to its file; when it has only one
    of train and val, that file's articles are dealt out: every EVERY-th to val, the rest to train.
    stats[split] gets each file's raw counts (see read_articles)."""
    stats = stats if stats is not None else {}
    for split, path in files.items():
        stats[split] = {"file": str(path)}
        articles = read_articles(path, stats[split])
        if split in ("train", "val") and not ("train" in files and "val" in files):
            for i, article in enumerate(articles, start=1):
                yield ("val" if i % EVERY == 0 else "train"), article
        else:
            for article in articles:
                yield split, article


# ----------------------------------------------------------------------------- downloading

def download_all(cache_dir):
    files = {}
    for split, name in DOWNLOADS.items():
        url = URL.format(name=name)
        try:
            files[split] = download(url, cache_dir / f"{name}.txt")
        except (OSError, http.client.HTTPException) as e:  # URLError and timeouts are OSErrors
            sys.exit(f"error: could not download {url} ({e}).\nOffline? Pass local copies of "
                     "WikiText-2's tokenised files instead: --train wiki.train.tokens "
                     "--val wiki.valid.tokens (either alone is split 90/10 by articles)")
    return files


# ----------------------------------------------------------------------------- main

def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Tokenize WikiText-2 into token shards (train/val/test) for causal-LM pretraining.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--train", type=Path, default=None,
                        help="local wiki.train.tokens; with no --train/--val/--test the three files are downloaded")
    parser.add_argument("--val", type=Path, default=None,
                        help="local wiki.valid.tokens; given without --train (or --train without it), "
                             "the one file is split by articles, every 10th to val (a smoke test)")
    parser.add_argument("--test", type=Path, default=None,
                        help="local wiki.test.tokens, written as the split 'test' (needs --train or --val)")
    parser.add_argument("--out", type=Path, default=HERE / "shards",
                        help="output folder for the token shards, meta.json and tokenizer.json")
    parser.add_argument("--vocab-size", type=int, default=8192,
                        help="size of the byte-level BPE vocabulary trained on the train split")
    parser.add_argument("--cache-dir", type=Path,
                        default=cache_dir("wikitext2"),
                        help="where the downloaded files are kept (and reused)")
    args = parser.parse_args(argv)

    if args.vocab_size < 1:
        sys.exit(f"error: --vocab-size must be positive, got {args.vocab_size}")
    local = {split: path for split, path in (("train", args.train), ("val", args.val), ("test", args.test)) if path}
    if local:
        if "train" not in local and "val" not in local:
            sys.exit("error: --test needs --train or --val (the test file is never trained on)")
        for split, path in local.items():
            if not path.is_file():
                sys.exit(f"error: --{split} {path}: no such file")
        files = local
    else:
        files = download_all(args.cache_dir)
    single = None if "train" in files and "val" in files else files.get("train", files.get("val"))
    if single:
        print(f"WARNING: only one of --train/--val: splitting {single} by articles, every {EVERY}th to val. "
              "These shards are a smoke test; their val loss is not comparable with WikiText-2 results.",
              file=sys.stderr)

    t0 = time.perf_counter()
    train_lines = (line for split, article in split_articles(files) if split == "train" for line in article)
    tokenizer = Tokenizer.train(train_lines, kind="bpe", vocab_size=args.vocab_size)
    stats = {}
    source = {"dataset": "WikiText-2 (v1, tokenised)", "files": {s: str(p.resolve()) for s, p in files.items()},
              "downloaded": not local, "split_by_articles_every": EVERY if single else None,
              "kind": "bpe", "vocab_size": args.vocab_size}
    meta = write_shards(args.out, split_articles(files, stats), tokenizer, source=source)
    for split in ("train", "val"):
        if meta["splits"].get(split, {}).get("documents", 0) == 0:
            (args.out / "meta.json").unlink()  # not a usable shard directory
            sys.exit(f"error: the {split} split is empty: {single or files[split]} has too few articles"
                     + (f" (a file split by articles needs at least {EVERY})" if single else ""))
    meta["source"]["file_counts"] = stats
    atomic_write_json(args.out / "meta.json", meta)

    for split, counts in stats.items():
        standard = STANDARD[split]
        print(f"{counts['file']}: {counts['lines']:,} lines, {counts['tokens']:,} tokens counting <eos>, "
              f"{counts['articles']:,} articles (the standard {DOWNLOADS[split]} file: {standard[0]:,} lines, "
              f"{standard[1]:,} tokens)")
        if not local and (counts["lines"], counts["tokens"]) != standard:
            print(f"warning: the download differs from the standard WikiText-2 {DOWNLOADS[split]} file", file=sys.stderr)
    for split, n in meta["splits"].items():
        print(f"{split}: {n['documents']:,} articles, {n['lines']:,} lines, {n['tokens']:,} tokens")
    print(f"wrote {args.out} (vocabulary {tokenizer.vocab_size:,}) in {time.perf_counter() - t0:.1f}s")
    print(f"train with: python train.py --arch decoder --objective clm --data {args.out}")
    return meta


if __name__ == "__main__":
    main()
