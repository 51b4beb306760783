"""WNUT-17: emerging and rare named entities in social-media text, for `finetune.py --task ner`.

    python data/wnut17/prepare.py                      # downloads the shared task's files
    python data/wnut17/prepare.py --input DIR          # local copies: DIR/wnut17train.conll (or train.conll),
                                                       #   DIR/emerging.dev.conll (or dev.conll), DIR/emerging.test.annotated (or test.conll)
    python finetune.py --task ner                      # reads the files written here

The WNUT 2017 shared task (Derczynski et al. 2017): tweets, Reddit, YouTube and StackExchange
comments tagged with BIO over six types (person, location, group, corporation, product,
creative-work): 3,394 / 1,009 / 1,287 sentences. Scored by entity-level F1. The data is CC BY 4.0.
Written here: train.conll, dev.conll, test.conll (token TAB tag, a blank line between sentences;
the training file's separator lines that hold only whitespace become empty lines).
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # this checkout's minilm

from minilm.checkpoint import atomic_write_text  # noqa: E402
from minilm.data.recipes import recipe_parser, source  # noqa: E402

URL = "https://raw.githubusercontent.com/leondz/emerging_entities_17/master/{name}"
FILES = {"train": ["wnut17train.conll", "train.conll"], "dev": ["emerging.dev.conll", "dev.conll"], "test": ["emerging.test.annotated", "test.conll"]}


def main(argv=None):
    args = recipe_parser(__doc__, "wnut17", HERE).parse_args(argv)
    for split, names in FILES.items():
        path = source(args, names, URL.format(name=names[0]))
        lines = [line.rstrip() for line in path.read_text(encoding="utf-8").splitlines()]
        atomic_write_text(args.out / f"{split}.conll", "\n".join(lines).strip("\n") + "\n")
        sentences = sum(1 for k, line in enumerate(lines) if line and (k == 0 or not lines[k - 1]))
        print(f"{split}: {sentences:,} sentences -> {args.out / f'{split}.conll'}")


if __name__ == "__main__":
    main()
