"""How often a masked word is written elsewhere in its pretraining row: what copying earns.

    python bench/repeats.py              # the corpora of minilm-mini, where their recipes have been run
    python bench/repeats.py --samples 5000 --out /tmp/repeats.json

For each corpus, --samples times: a line drawn at random, a content word of it (letters only, three
or more, not a stop word) drawn at random, and whether the same word is written elsewhere in (a) its
own line, (b) a row of --row-words words read from that line on through the lines after it, as
`train.py --mlm-rows consecutive` packs an MLM row, and (c) a row of that line followed by lines
drawn at random, as `--mlm-rows random-lines` packs it. Where (b) is far above (a) and (c), a model
learns that the word under a [MASK] is often one it can see in the row, and copies; its answers to
a single sentence then repeat that sentence's words (`bench/cloze.py` counts them). Words are
counted, not tokens, so the numbers do not depend on a tokenizer.
"""

import argparse
import random
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from minilm.data.corpus import open_text  # noqa: E402
from minilm.data.prepare import STOP_WORDS  # noqa: E402
from minilm.files import atomic_write_json, atomic_write_text  # noqa: E402

CORPORA = {"wordnet": ROOT / "data" / "wordnet" / "corpus.txt.gz", "gcide": ROOT / "data" / "gcide" / "corpus.txt.gz",
           "prose": ROOT / "data" / "prose" / "corpus.txt.gz"}


def words(line: str) -> list[str]:
    return re.findall(r"[a-z]+", line.lower())


def repeat_rates(lines: list[str], samples: int, row_words: int, seed: int = 0) -> dict:
    """The share of drawn words written again in their line, their consecutive row, their random row."""
    rng, counts, n = random.Random(seed), {"line": 0, "consecutive": 0, "random-lines": 0}, 0
    while n < samples:
        i = rng.randrange(len(lines))
        own = words(lines[i])
        content = [k for k, w in enumerate(own) if len(w) > 2 and w not in STOP_WORDS]
        if not content:
            continue
        k = rng.choice(content)
        rest = own[:k] + own[k + 1:]  # the row without the drawn word itself
        rows = {"line": rest}
        for kind in ("consecutive", "random-lines"):
            row, j = list(rest), i
            while len(row) < row_words - 1 and j + 1 < len(lines):
                j = j + 1 if kind == "consecutive" else rng.randrange(len(lines))
                row += words(lines[j])
            rows[kind] = row[: row_words - 1]
        for kind, row in rows.items():
            counts[kind] += own[k] in row
        n += 1
    return {kind: c / n for kind, c in counts.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=20000, help="words drawn per corpus (default: %(default)s)")
    p.add_argument("--row-words", type=int, default=100, help="words in a row, about 128 WordPiece tokens (default: %(default)s)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "repeats.json", help="results JSON (default: %(default)s)")
    args = p.parse_args(argv)
    if args.samples < 1 or args.row_words < 2:
        p.error("--samples must be >= 1 and --row-words >= 2")
    result = {}
    for name, path in CORPORA.items():
        if not path.is_file():
            print(f"{name}: {path.relative_to(ROOT)} is not built (its recipe: data/{name}/prepare.py); skipped")
            continue
        with open_text(path) as f:
            lines = [line for line in f.read().splitlines() if line.strip()]
        result[name] = repeat_rates(lines, args.samples, args.row_words)
        r = result[name]
        print(f"{name}: written again in its line {r['line']:.1%}, in a consecutive row {r['consecutive']:.1%}, "
              f"in a row of random lines {r['random-lines']:.1%}")
    atomic_write_json(args.out, {"samples": args.samples, "row_words": args.row_words, "corpora": result})
    table = ["| corpus | in its own line | in a row of consecutive lines | in a row of random lines |", "|---|---|---|---|"]
    table += [f"| {name} | {100 * r['line']:.1f}% | {100 * r['consecutive']:.1f}% | {100 * r['random-lines']:.1f}% |" for name, r in result.items()]
    table += ["", f"A content word drawn from a random line, {args.samples:,} per corpus, rows of {args.row_words} words: "
              "the share written again elsewhere in the row. `python bench/repeats.py`"]
    atomic_write_text(args.out.with_suffix(".md"), "\n".join(table) + "\n")
    return result


if __name__ == "__main__":
    main()
