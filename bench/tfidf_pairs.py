"""TF-IDF cosine of a text pair: the baseline minilm's sentence-pair regressions are set beside (STS-B);
with --embed CKPT, the cosine of a checkpoint's sentence embeddings instead (no fine-tuning).

    D=../shared/data/stsb
    python bench/tfidf_pairs.py --train $D/stsb_train.tsv --dev $D/stsb_dev.tsv --test $D/stsb_test.tsv \
        --text-col sentence1 --text-pair-col sentence2 --label-col score --out bench/results/tfidf_stsb.json
    python bench/tfidf_pairs.py ... --embed minilm-mini      # mean-pooled embeddings (infer.py embed)

No training on the labels: word TF-IDF vectors (vocabulary and idf from the training file's texts,
both columns), and each pair's score is the cosine of its two vectors,

    cos(a, b) = a . b / (|a| |b|),

scored by Pearson and Spearman correlation with the gold values on dev and test (the correlations
do not depend on the scale, so no fit to the label range is needed). Unigrams, lowercased, sublinear
tf; the n-gram range is picked by dev Pearson from (1, 1) and (1, 2). With --embed the vectors are
`infer.py embed`'s: the mean of the checkpoint's last hidden states over the real tokens, unit length.

scikit-learn is needed here but is not a dependency of minilm: `pip install scikit-learn`.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def read_pairs(path, args):
    """(first texts, second texts, values) of one file, read by minilm's reader (errors name file and line)."""
    from minilm.data.tasks import read_examples

    rows = read_examples(path, args.text_col, args.text_pair_col, args.label_col)
    return [r.text for r in rows], [r.pair for r in rows], np.array([float(r.label) for r in rows])


def cosines(vectorizer, a, b) -> np.ndarray:
    A, B = vectorizer.transform(a), vectorizer.transform(b)  # rows of unit length (norm="l2")
    return np.asarray(A.multiply(B).sum(axis=1)).ravel()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", required=True, help="training file: its texts fit the vocabulary and idf")
    p.add_argument("--dev", required=True, help="development file: picks the n-gram range")
    p.add_argument("--test", help="test file: scored once")
    p.add_argument("--text-col", default="text", help="column of the first text (default: %(default)s)")
    p.add_argument("--text-pair-col", default="text_pair", help="column of the second text (default: %(default)s)")
    p.add_argument("--label-col", default="label", help="column of the gold value (default: %(default)s)")
    p.add_argument("--embed", metavar="CKPT", help="score by the cosine of this checkpoint's sentence embeddings, not TF-IDF")
    p.add_argument("--out", help="JSON file for the results")
    args = p.parse_args(argv)
    splits = {"dev": read_pairs(args.dev, args), **({"test": read_pairs(args.test, args)} if args.test else {})}
    if args.embed:
        return report(splits, embedding_cosines(args.embed), {"method": f"cosine of {args.embed}'s mean-pooled embeddings"}, args.out)
    from sklearn.feature_extraction.text import TfidfVectorizer

    from minilm.metrics import pearson

    a, b, _ = read_pairs(args.train, args)
    best = None
    for ngrams in ((1, 1), (1, 2)):
        vectorizer = TfidfVectorizer(ngram_range=ngrams, sublinear_tf=True).fit(a + b)
        dev = pearson(cosines(vectorizer, *splits["dev"][:2]), splits["dev"][2])
        if best is None or dev > best[0]:
            best = (dev, ngrams, vectorizer)
    _, ngrams, vectorizer = best
    info = {"method": "tf-idf cosine", "ngram_range": list(ngrams), "train": str(args.train)}
    return report(splits, lambda x, y: cosines(vectorizer, x, y), info, args.out)


def embedding_cosines(ckpt):
    from minilm.inference.predict import embed_texts, load

    model, tokenizer = load(ckpt)
    return lambda x, y: (embed_texts(model, tokenizer, x) * embed_texts(model, tokenizer, y)).sum(-1).numpy()  # unit vectors


def report(splits, score, info, out):
    """Pearson and Spearman of score(first texts, second texts) against the gold values, per split."""
    from minilm.files import atomic_write_json
    from minilm.metrics import pearson, spearman

    results = dict(info)
    for name, (x, y, gold) in splits.items():
        c = score(x, y)
        results[name] = {"pearson": pearson(c, gold), "spearman": spearman(c, gold), "n": len(gold)}
        print(f"{name}: pearson {results[name]['pearson']:.4f}, spearman {results[name]['spearman']:.4f} ({len(gold)} pairs)")
    if out:
        atomic_write_json(Path(out), results)
    return results


if __name__ == "__main__":
    main()
