"""Universal Dependencies English Web Treebank: part-of-speech tagging, for `finetune.py --task ner`
(UPOS tags by default, `--tag-col xpos` for the Penn Treebank tags).

    python data/ud_ewt/prepare.py                      # downloads the release's CoNLL-U files
    python data/ud_ewt/prepare.py --input DIR          # local copies: DIR/en_ewt-ud-{train,dev,test}.conllu
    python finetune.py --task ner --train data/ud_ewt/train.conllu --dev data/ud_ewt/dev.conllu --test data/ud_ewt/test.conllu

UD_English-EWT (Silveira et al. 2014): 12,544 / 2,001 / 2,077 sentences of web text (blogs,
reviews, e-mail, answers) with 17 universal POS tags. CC BY-SA 4.0. Scored by tag accuracy
(= micro F1). The files are copied unchanged: train.conllu, dev.conllu, test.conllu.

Two text-to-text tasks are written from the same sentences (JSONL, one sentence per line):
  lemmas-{split}.jsonl   {"source": the words, "target": their lemmas}: lemmatisation, for
                         `finetune.py --task seq2seq --train data/ud_ewt/lemmas-train.jsonl ...`
  upos-{split}.jsonl     {"prompt": "POS tags: " + the words, "response": their UPOS tags}, for
                         `finetune.py --task sft --train data/ud_ewt/upos-train.jsonl ...`
"""

import json

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # this checkout's minilm

from minilm.checkpoint import atomic_write_text  # noqa: E402
from minilm.data.recipes import recipe_parser, source  # noqa: E402
from minilm.data.tagging import read_conll  # noqa: E402

URL = "https://raw.githubusercontent.com/UniversalDependencies/UD_English-EWT/master/en_ewt-ud-{split}.conllu"


def main(argv=None):
    args = recipe_parser(__doc__, "ud_ewt", HERE).parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev", "test"):
        path = source(args, [f"en_ewt-ud-{split}.conllu"], URL.format(split=split))
        target = args.out / f"{split}.conllu"
        tmp = target.with_name(f".{target.name}.part")
        shutil.copyfile(path, tmp)
        tmp.replace(target)
        sentences = read_conll(target)
        lemmas = read_conll(target, "lemma")
        atomic_write_text(args.out / f"lemmas-{split}.jsonl", "".join(
            json.dumps({"source": " ".join(s.words), "target": " ".join(t.tags)}) + "\n" for s, t in zip(sentences, lemmas)))
        atomic_write_text(args.out / f"upos-{split}.jsonl", "".join(
            json.dumps({"prompt": "POS tags: " + " ".join(s.words), "response": " ".join(s.tags)}) + "\n" for s in sentences))
        print(f"{split}: {len(sentences):,} sentences -> {target}, lemmas-{split}.jsonl, upos-{split}.jsonl")


if __name__ == "__main__":
    main()
