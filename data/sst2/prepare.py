"""SST-2 (GLUE): binary sentiment of movie-review sentences, for `finetune.py --task cls`.

    python data/sst2/prepare.py                        # downloads GLUE's SST-2.zip
    python data/sst2/prepare.py --input DIR            # local copies: DIR/train.tsv, DIR/dev.tsv [, DIR/test*.tsv]
    python finetune.py --task cls --train data/sst2/train.tsv --dev data/sst2/dev.tsv

The Stanford Sentiment Treebank (Socher et al. 2013) as GLUE ships it (Wang et al. 2019): 67,349
training phrases and 872 dev sentences, lower-cased and tokenised, labelled 0 (negative) or 1
(positive). GLUE's test labels are not public, so a test file is written only when --input holds
one with a label column. Written here: train.tsv, dev.tsv (and test.tsv), columns `text` and `label`.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # this checkout's minilm

from minilm.data.recipes import column, read_tsv, recipe_parser, source, write_tsv  # noqa: E402

URL = "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip"
FILES = {"train": ["train.tsv"], "dev": ["dev.tsv"], "test": ["test_labeled_unofficial.tsv", "test.tsv"]}


def main(argv=None):
    args = recipe_parser(__doc__, "sst2", HERE).parse_args(argv)
    for split, names in FILES.items():
        path = source(args, names, None if split == "test" else URL, f"SST-2/{names[0]}", required=split != "test")
        if path is None:
            continue
        header, rows = read_tsv(path)
        if "label" not in header:
            print(f"{path}: no labels; no {split} file written")
            continue
        text, label = column(path, header, "sentence"), column(path, header, "label")
        n = write_tsv(args.out / f"{split}.tsv", ["text", "label"], ((r[text], r[label]) for r in rows))
        print(f"{split}: {n:,} sentences -> {args.out / f'{split}.tsv'}")


if __name__ == "__main__":
    main()
