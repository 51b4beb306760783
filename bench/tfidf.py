"""TF-IDF + logistic regression baseline for a text classification task folder.

    python bench/tfidf.py                                  # WordNet noun supersense (the default data)
    python bench/tfidf.py --data data/sst2 --out bench/results/tfidf_sst2.json   # after data/sst2/prepare.py
    python bench/tfidf.py --data data/wordnet/supersense --out /tmp/tfidf.json

The folder holds train, dev and test files (.tsv or .tsv.gz, columns `text` and `label`), as
data/wordnet/prepare.py and the data/sst2 recipe write them. For the default, WordNet supersense,
the task is to read a noun's definition ("a young person of either sex") and predict its
lexicographer file, one of 25 classes (noun.person). This script gives the number minilm's
fine-tuned encoders are set beside: word 1-2 gram TF-IDF features (sublinear tf) and a multinomial logistic
regression, with the inverse regularisation strength C picked by dev accuracy from a small grid,
then dev and test accuracy and macro-F1, next to the majority-class baseline (the most frequent
train label, always). Results go to a JSON file and a small Markdown table on stdout.

scikit-learn is needed here but is not a dependency of minilm: `pip install scikit-learn`.
"""

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
C_GRID = [10.0, 30.0, 100.0, 300.0]   # dev accuracy flattens out towards 300


def split_file(folder: Path, split: str) -> Path | None:
    for name in (f"{split}.tsv.gz", f"{split}.tsv"):
        if (folder / name).is_file():
            return folder / name
    return None


def read_split(path):
    """(texts, labels) of one task file, read by minilm's reader (errors name file and line)."""
    from minilm.data.tasks import read_examples

    try:
        examples = read_examples(path)
    except ValueError as e:
        sys.exit(f"error: {e}")
    return [e.text for e in examples], [e.label for e in examples]


def scores(y_true, y_pred):
    from sklearn.metrics import accuracy_score, f1_score
    return {"accuracy": accuracy_score(y_true, y_pred),
            "macro_f1": f1_score(y_true, y_pred, average="macro", zero_division=0)}


def main():
    parser = argparse.ArgumentParser(
        description="TF-IDF + logistic regression baseline on a text classification task folder.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "wordnet" / "supersense",
                        help="folder holding train/dev/test.tsv[.gz] with text and label columns")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "bench" / "results" / "tfidf_supersense.json",
                        help="where the results JSON is written")
    args = parser.parse_args()

    try:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        sys.exit("error: this benchmark needs scikit-learn, which minilm does not depend on: "
                 "pip install scikit-learn")
    files = {s: split_file(args.data, s) for s in ("train", "dev", "test")}
    missing = [s for s, f in files.items() if f is None]
    if missing:
        sys.exit(f"error: no {', '.join(missing)}.tsv[.gz] in {args.data}; run its recipe "
                 "(python data/wordnet/prepare.py, python data/sst2/prepare.py) first")

    data = {s: read_split(f) for s, f in files.items()}
    (train_x, train_y), (dev_x, dev_y), (test_x, test_y) = data["train"], data["dev"], data["test"]

    t0 = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    train_m = vectorizer.fit_transform(train_x)   # idf and vocabulary from train only
    dev_m, test_m = vectorizer.transform(dev_x), vectorizer.transform(test_x)

    grid, best = {}, None
    for c in C_GRID:
        # saga, not the default lbfgs: lbfgs needs minutes per C here (300k features, 25 classes)
        model = LogisticRegression(C=c, solver="saga", max_iter=2000,
                                   random_state=0).fit(train_m, train_y)
        grid[c] = scores(dev_y, model.predict(dev_m))
        print(f"C={c:g}: dev accuracy {grid[c]['accuracy']:.4f}", file=sys.stderr)
        if best is None or grid[c]["accuracy"] > grid[best[0]]["accuracy"]:
            best = (c, model)
    best_c, model = best

    majority = Counter(train_y).most_common(1)[0][0]
    data_dir = args.data.resolve()
    shown_data = data_dir.relative_to(ROOT) if data_dir.is_relative_to(ROOT) else data_dir
    results = {
        "data": str(shown_data),
        "sizes": {s: len(data[s][0]) for s in data},
        "features": {"ngram_range": [1, 2], "sublinear_tf": True,
                     "vocabulary": len(vectorizer.vocabulary_)},
        "classifier": "LogisticRegression(solver='saga', multinomial), C chosen by dev accuracy",
        "C_grid_dev": {str(c): grid[c] for c in C_GRID},
        "best_C": best_c,
        "tfidf_lr": {"dev": grid[best_c], "test": scores(test_y, model.predict(test_m))},
        "majority": {"label": majority, "test": scores(test_y, [majority] * len(test_y))},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")

    lr, maj = results["tfidf_lr"], results["majority"]["test"]
    print("| model | dev acc | dev macro-F1 | test acc | test macro-F1 |")
    print("|---|---|---|---|---|")
    cells = [lr[split][metric] for split in ("dev", "test") for metric in ("accuracy", "macro_f1")]
    print(f"| TF-IDF 1-2g + LR (C={best_c:g}) | " + " | ".join(f"{x:.1%}" for x in cells) + " |")
    print(f"| majority ({majority}) | | | {maj['accuracy']:.1%} | {maj['macro_f1']:.1%} |")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
