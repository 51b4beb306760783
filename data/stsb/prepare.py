"""STS-B (GLUE): sentence-pair similarity scored 0-5, for `finetune.py --task regression`.

    python data/stsb/prepare.py                        # downloads GLUE's STS-B.zip
    python data/stsb/prepare.py --input DIR            # local copies: DIR/train.tsv, DIR/dev.tsv [, DIR/sts-test.tsv]
    python finetune.py --task regression               # reads the files written here

The Semantic Textual Similarity Benchmark (Cer et al. 2017): 5,749 training and 1,500 dev pairs
from captions, news and forums, each scored by annotators from 0 (unrelated) to 5 (equivalent).
The test scores come from the benchmark's original sts-test.tsv (1,379 pairs; GLUE's own test.tsv
has none). Written here: train.tsv, dev.tsv, test.tsv with columns `text`, `text_pair`, `label`.
The scores are CC BY-SA 4.0; the sentences keep their sources' terms (see the benchmark's LICENSE).
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # this checkout's minilm

from minilm.data.recipes import column, read_tsv, recipe_parser, source, write_tsv  # noqa: E402

URL = "https://dl.fbaipublicfiles.com/glue/data/STS-B.zip"
HEADER = ["text", "text_pair", "label"]


def main(argv=None):
    args = recipe_parser(__doc__, "stsb", HERE).parse_args(argv)
    for split in ("train", "dev"):
        path = source(args, [f"{split}.tsv"], URL, f"STS-B/{split}.tsv")
        header, rows = read_tsv(path)
        a, b, score = (column(path, header, c) for c in ("sentence1", "sentence2", "score"))
        n = write_tsv(args.out / f"{split}.tsv", HEADER, ((r[a], r[b], r[score]) for r in rows))
        print(f"{split}: {n:,} pairs -> {args.out / f'{split}.tsv'}")
    path = source(args, ["sts-test.tsv"], URL, "STS-B/original/sts-test.tsv", required=False)
    if path is not None:  # no header: genre, file, year, id, score, sentence1, sentence2 (and sometimes sources)
        _, rows = read_tsv(path, header=False)
        n = write_tsv(args.out / "test.tsv", HEADER, ((r[5], r[6], r[4]) for r in rows))
        print(f"test: {n:,} pairs -> {args.out / 'test.tsv'}")


if __name__ == "__main__":
    main()
