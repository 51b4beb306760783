"""Prepare a labelled file for fine-tuning: clean it, remove duplicates, split it, and report.

    python -m minilm.data.prepare reviews.csv --text-col review --label-col sentiment --out data/reviews
    python finetune.py --train data/reviews/train.tsv --dev data/reviews/dev.tsv --test data/reviews/test.tsv

The file (CSV, TSV or JSONL, optionally gzipped) is read one row at a time; what is kept waits in
an SQLite database on disk beside the output, so memory does not grow with the file.

 1. read       a row that cannot be read (bad JSON, a wrong count of fields, bytes that are not
               UTF-8, an empty text, a missing label) is dropped and reported with file:line; a
               header that lacks the columns or is not UTF-8, or a file of which no row is kept,
               stops the tool with an error instead
 2. normalise  Unicode NFC, control and zero-width characters out, whitespace collapsed
 3. stop words (--remove-stopwords) English function words out. A Transformer reads function
               words as syntax ("not good" is not "good"), and usually loses accuracy without
               them; bag-of-words models (TF-IDF) are the ones that gain
 4. length     rows of fewer than --min-words or more than --max-words words out
 5. exact      duplicates of a text (compared case-folded) out, the first kept; one text with two
               labels is reported (conflicting labels)
 6. near       near duplicates out: MinHash signatures (Broder 1997) of the word 3-shingles, 128
               hashes h_i(x) = (a_i x + b_i) mod (2^31 - 1); sim(A, B) ~ fraction of equal minima
               estimates the Jaccard similarity |A n B| / |A u B|; candidates come from LSH, 32
               bands of 4 hashes; a text with sim >= --near to a kept one goes
 7. split      stratified by label and seeded: in each label, exactly round(n x --dev) rows go to
               dev and round(n x --test) to test, drawn by selection sampling (Knuth's Algorithm S)
 8. leakage    pairs across splits with sim >= --leak (below --near: similar, not duplicate) reported
 9. report     counts of every step, labels per split, token lengths under --tokenizer,
               vocabulary size and unknown-token rate: DIR/report.json and DIR/report.txt

DIR/train.tsv, dev.tsv and test.tsv have the columns `text` and `label` (finetune.py's defaults).
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import sys
import tempfile
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from minilm.data.corpus import clean_line
from minilm.data.tasks import field_value, file_format, records
from minilm.files import atomic_write_json, atomic_write_text

N_HASHES, BANDS = 128, 32  # MinHash signature length; LSH bands of N_HASHES / BANDS rows
PRIME = (1 << 31) - 1
_rng = np.random.default_rng(12345)  # fixed: signatures must mean the same in every run
A = _rng.integers(1, PRIME, N_HASHES, dtype=np.int64)
B = _rng.integers(0, PRIME, N_HASHES, dtype=np.int64)
EXAMPLES = 20  # listed cases per finding in the report

STOP_WORDS = frozenset("""a about above after again against all am an and any are as at be because been before being below between
both but by can could did do does doing down during each few for from further had has have having he her here hers herself him
himself his how i if in into is it its itself just me more most my myself no nor not now of off on once only or other our ours
ourselves out over own same she should so some such than that the their theirs them themselves then there these they this those
through to too under until up very was we were what when where which while who whom why will with would you your yours yourself
yourselves""".split())


# -- reading ----------------------------------------------------------------------------------------
def raw_rows(path: Path, text_col: str, label_col: str | None):
    """(line, text, label, problem) for every data row: problem is None or why the row is unreadable.
    A header without the columns, not UTF-8 or naming a column twice raises ValueError (every row
    would be unreadable)."""
    for lineno, record, problem in records(path, (text_col, label_col)):
        if problem:
            yield lineno, None, None, problem
        else:
            yield (lineno, *_fields(record, text_col, label_col))


def _fields(record: dict, text_col: str, label_col: str | None):
    """(text, label, None), or (None, None, why the row cannot be used)."""
    try:
        return field_value(record, text_col), field_value(record, label_col) if label_col else None, None
    except ValueError as e:
        return None, None, str(e)


# -- MinHash ------------------------------------------------------------------------------------------
def shingles(text: str) -> np.ndarray:
    """crc32 of the word 3-shingles of the case-folded text (its words, if fewer than three)."""
    words = text.casefold().split()
    grams = [" ".join(words[i : i + 3]) for i in range(max(1, len(words) - 2))]
    return np.array([zlib.crc32(g.encode("utf-8")) % PRIME for g in grams], dtype=np.int64)


def signature(text: str) -> np.ndarray:
    """(N_HASHES,) minima of h_i(x) = (a_i x + b_i) mod p over the shingles x."""
    x = shingles(text)
    return ((A[:, None] * x[None, :] + B[:, None]) % PRIME).min(axis=1)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """The MinHash estimate of the Jaccard similarity: the fraction of equal minima."""
    return float((a == b).mean())


def band_keys(sig: np.ndarray) -> list[int]:
    r = N_HASHES // BANDS
    return [zlib.crc32(sig[k * r : (k + 1) * r].tobytes()) for k in range(BANDS)]


# -- the store ----------------------------------------------------------------------------------------
class Store:
    """Kept rows, their signatures and LSH buckets, in SQLite on disk (a bounded page cache)."""

    def __init__(self, path: Path):
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA cache_size = -16000")  # 16 MB
        self.db.execute("PRAGMA journal_mode = OFF")
        self.db.execute("PRAGMA synchronous = OFF")
        self.db.executescript("""
            CREATE TABLE rows (id INTEGER PRIMARY KEY, line INTEGER, text TEXT, label TEXT, sig BLOB, split TEXT);
            CREATE TABLE exact (h INTEGER PRIMARY KEY, id INTEGER);
            CREATE TABLE lsh (band INTEGER, key INTEGER, id INTEGER);
            CREATE INDEX lsh_key ON lsh (band, key);
        """)

    def exact(self, text: str):
        h = int.from_bytes(zlib.crc32(text.casefold().encode()).to_bytes(4, "big") + zlib.adler32(text.casefold().encode()).to_bytes(4, "big"), "big") >> 1
        found = self.db.execute("SELECT rows.id, rows.line, rows.label, rows.text FROM exact JOIN rows ON rows.id = exact.id WHERE h = ?", (h,)).fetchone()
        if found is not None and found[3].casefold() == text.casefold():
            return found, h
        return None, h

    def candidates(self, keys: list[int]):
        seen = set()
        for band, key in enumerate(keys):
            for (i,) in self.db.execute("SELECT id FROM lsh WHERE band = ? AND key = ?", (band, key)):
                if i not in seen:
                    seen.add(i)
                    yield i

    def sig(self, i: int) -> np.ndarray:
        (blob,) = self.db.execute("SELECT sig FROM rows WHERE id = ?", (i,)).fetchone()
        return np.frombuffer(blob, dtype=np.int64)

    def add(self, line: int, text: str, label, sig: np.ndarray, h: int, keys: list[int]) -> int:
        cur = self.db.execute("INSERT INTO rows (line, text, label, sig) VALUES (?, ?, ?, ?)", (line, text, label, sig.tobytes()))
        i = cur.lastrowid
        self.db.execute("INSERT OR IGNORE INTO exact (h, id) VALUES (?, ?)", (h, i))
        self.db.executemany("INSERT INTO lsh (band, key, id) VALUES (?, ?, ?)", [(b, k, i) for b, k in enumerate(keys)])
        return i


# -- the pipeline ---------------------------------------------------------------------------------------
def prepare(args) -> dict:
    path = Path(args.file)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    file_format(path)  # names an unknown suffix before anything is written
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"input": str(path), "text_col": args.text_col, "label_col": args.label_col, "read": 0,
              "corrupt": {"count": 0, "examples": []}, "empty_after_cleaning": 0, "too_short": 0, "too_long": 0,
              "exact_duplicates": 0, "conflicting_labels": {"count": 0, "examples": []},
              "near_duplicates": {"count": 0, "threshold": args.near, "examples": []}, "stopwords_removed": args.remove_stopwords}
    with tempfile.TemporaryDirectory(dir=out, prefix=".prepare.") as tmp:
        store = Store(Path(tmp) / "rows.sqlite")
        for line, text, label, problem in tqdm(raw_rows(path, args.text_col, args.label_col), desc="reading", unit="row"):
            report["read"] += 1
            if problem:
                _note(report["corrupt"], f"{path}:{line}: {problem}")
                continue
            text = clean_line(text)
            if args.remove_stopwords:
                text = " ".join(w for w in text.split() if w.casefold().strip(".,;:!?\"'()") not in STOP_WORDS)
            n = len(text.split())
            if n == 0:
                report["empty_after_cleaning"] += 1
                continue
            if n < args.min_words:
                report["too_short"] += 1
                continue
            if args.max_words and n > args.max_words:
                report["too_long"] += 1
                continue
            found, h = store.exact(text)
            if found is not None:
                report["exact_duplicates"] += 1
                if found[2] != label:
                    _note(report["conflicting_labels"], f"{path}:{line}: label {label!r}, but {path}:{found[1]} has the same text with {found[2]!r}")
                continue
            sig = signature(text)
            keys = band_keys(sig)
            if args.near:
                twin = next((i for i in store.candidates(keys) if similarity(sig, store.sig(i)) >= args.near), None)
                if twin is not None:
                    (twin_line,) = store.db.execute("SELECT line FROM rows WHERE id = ?", (twin,)).fetchone()
                    _note(report["near_duplicates"], f"{path}:{line} is a near duplicate of {path}:{twin_line}")
                    continue
            store.add(line, text, label, sig, h, keys)
        store.db.commit()
        (kept,) = store.db.execute("SELECT COUNT(*) FROM rows").fetchone()
        if not kept:
            first = report["corrupt"]["examples"][:1]
            raise ValueError(f"{path}: no row kept of {report['read']:,} read" + (f" (the first unreadable: {first[0]})" if first else ""))
        assign_splits(store, args)
        report["leakage"] = leakage(store, args.leak)
        report.update(statistics(store, args))
        for split in ("train", "dev", "test"):
            rows = store.db.execute("SELECT text, label FROM rows WHERE split = ? ORDER BY id", (split,))
            header = "text\tlabel\n" if args.label_col else "text\n"
            body = "".join(f"{t}\t{lab}\n" if args.label_col else f"{t}\n" for t, lab in rows)
            atomic_write_text(out / f"{split}.tsv", header + body)
        store.db.close()
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.txt", readable(report))
    return report


def _note(finding: dict, example: str) -> None:
    finding["count"] += 1
    if len(finding["examples"]) < EXAMPLES:
        finding["examples"].append(example)


def assign_splits(store: Store, args) -> None:
    """Stratified, seeded: per label, exactly round(n x fraction) rows to dev and to test, drawn
    by selection sampling (each row taken with probability needed / remaining)."""
    counts = dict(store.db.execute("SELECT COALESCE(label, ''), COUNT(*) FROM rows GROUP BY COALESCE(label, '')").fetchall())
    need = {lab: {"dev": round(n * args.dev), "test": round(n * args.test)} for lab, n in counts.items()}
    left = dict(counts)
    rng = random.Random(args.seed)
    updates = []
    for i, label in store.db.execute("SELECT id, COALESCE(label, '') FROM rows ORDER BY id"):
        split = "train"
        r = rng.random() * left[label]
        if r < need[label]["dev"]:
            split = "dev"
            need[label]["dev"] -= 1
        elif r < need[label]["dev"] + need[label]["test"]:
            split = "test"
            need[label]["test"] -= 1
        left[label] -= 1
        updates.append((split, i))
        if len(updates) >= 10_000:
            store.db.executemany("UPDATE rows SET split = ? WHERE id = ?", updates)
            updates = []
    store.db.executemany("UPDATE rows SET split = ? WHERE id = ?", updates)
    store.db.commit()


def leakage(store: Store, threshold: float) -> dict:
    """Pairs of rows in different splits whose MinHash similarity is >= threshold."""
    found = {"count": 0, "threshold": threshold, "examples": []}
    seen = set()
    for band, key in store.db.execute("SELECT band, key FROM lsh GROUP BY band, key HAVING COUNT(*) > 1"):
        ids = [i for (i,) in store.db.execute("SELECT id FROM lsh WHERE band = ? AND key = ?", (band, key))]
        rows = {i: store.db.execute("SELECT line, split, sig FROM rows WHERE id = ?", (i,)).fetchone() for i in ids}
        for x in ids:
            for y in ids:
                if x < y and (x, y) not in seen and rows[x][1] != rows[y][1]:
                    seen.add((x, y))
                    sim = similarity(np.frombuffer(rows[x][2], dtype=np.int64), np.frombuffer(rows[y][2], dtype=np.int64))
                    if sim >= threshold:
                        _note(found, f"line {rows[x][0]} ({rows[x][1]}) and line {rows[y][0]} ({rows[y][1]}): similarity {sim:.2f}")
    return found


def statistics(store: Store, args) -> dict:
    """Labels per split, token lengths under the tokenizer, vocabulary and unknown-token rate."""
    from minilm.tokenizer import UNK, Tokenizer

    tokenizer = Tokenizer.load(args.tokenizer)
    unk = tokenizer.backend.token_to_id(UNK)
    splits, lengths, words, tokens, unknown = {}, [], Counter(), 0, 0
    for split, label, text in store.db.execute("SELECT split, label, text FROM rows ORDER BY id"):
        s = splits.setdefault(split, {"rows": 0, "labels": Counter()})
        s["rows"] += 1
        if label is not None:
            s["labels"][label] += 1
        ids = tokenizer.encode(text)
        lengths.append(len(ids))
        tokens += len(ids)
        unknown += sum(1 for t in ids if t == unk) if unk is not None else 0
        if len(words) < 2_000_000:  # a bound on memory for the vocabulary count
            words.update(w.casefold() for w in text.split())
    q = np.percentile(lengths, [50, 90, 99]).tolist() if lengths else [0, 0, 0]
    return {
        "kept": len(lengths),
        "splits": {k: {"rows": v["rows"], "labels": dict(sorted(v["labels"].items()))} for k, v in sorted(splits.items())},
        "tokens": {"tokenizer": str(args.tokenizer), "mean": float(np.mean(lengths)) if lengths else 0.0, "p50": q[0], "p90": q[1], "p99": q[2],
                   "max": max(lengths, default=0), "over_max_len": sum(1 for n in lengths if n > args.max_len), "max_len": args.max_len},
        "vocabulary": {"words": len(words), "unknown_token_rate": unknown / max(tokens, 1)},
    }


def readable(r: dict) -> str:
    lines = [f"{r['input']}: {r['read']:,} rows read, {r['kept']:,} kept",
             f"  unreadable rows dropped: {r['corrupt']['count']:,}",
             f"  empty after cleaning: {r['empty_after_cleaning']:,}; too short: {r['too_short']:,}; too long: {r['too_long']:,}",
             f"  exact duplicates dropped: {r['exact_duplicates']:,} (conflicting labels among them: {r['conflicting_labels']['count']:,})",
             f"  near duplicates dropped (similarity >= {r['near_duplicates']['threshold']}): {r['near_duplicates']['count']:,}",
             f"  similar pairs across splits (similarity >= {r['leakage']['threshold']}): {r['leakage']['count']:,}"]
    for name, s in r["splits"].items():
        labels = ", ".join(f"{k} {v:,}" for k, v in s["labels"].items())
        lines.append(f"  {name}: {s['rows']:,} rows" + (f" ({labels})" if labels else ""))
    t = r["tokens"]
    lines.append(f"  tokens per row ({t['tokenizer']}): mean {t['mean']:.1f}, median {t['p50']:.0f}, p90 {t['p90']:.0f}, p99 {t['p99']:.0f}, "
                 f"max {t['max']}; {t['over_max_len']:,} rows over {t['max_len']}")
    lines.append(f"  vocabulary: {r['vocabulary']['words']:,} words; unknown-token rate {r['vocabulary']['unknown_token_rate']:.2%}")
    for key in ("corrupt", "conflicting_labels", "near_duplicates", "leakage"):
        for example in r[key]["examples"][:5]:
            lines.append(f"  {key}: {example}")
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m minilm.data.prepare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", help="the labelled file: .csv, .tsv or .jsonl, optionally .gz")
    p.add_argument("--text-col", default="text", help="column of the text (default: %(default)s)")
    p.add_argument("--label-col", help="column of the label (none: the splits are not stratified)")
    p.add_argument("--out", required=True, help="folder for train.tsv, dev.tsv, test.tsv, report.json and report.txt")
    p.add_argument("--dev", type=float, default=0.1, help="fraction of each label for dev (default: %(default)s)")
    p.add_argument("--test", type=float, default=0.1, help="fraction of each label for test (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split (default: %(default)s)")
    p.add_argument("--near", type=float, default=0.8, help="drop texts with MinHash similarity >= this to a kept one (0: keep them; default: %(default)s)")
    p.add_argument("--leak", type=float, default=0.5, help="report pairs across splits with similarity >= this (default: %(default)s)")
    p.add_argument("--min-words", type=int, default=1, help="drop rows with fewer words (default: %(default)s)")
    p.add_argument("--max-words", type=int, default=0, help="drop rows with more words (0: no limit; default: %(default)s)")
    p.add_argument("--remove-stopwords", action="store_true", help="drop English function words (usually hurts a Transformer; see above)")
    p.add_argument("--tokenizer", default="minilm-mini", help="tokenizer for the length statistics: a tokenizer.json, a checkpoint or a shipped name (default: %(default)s)")
    p.add_argument("--max-len", type=int, default=128, help="report rows longer than this many tokens (default: %(default)s)")
    args = p.parse_args(argv)
    if not (0 <= args.dev < 1 and 0 <= args.test < 1 and args.dev + args.test < 1):
        p.error(f"--dev and --test must be fractions whose sum is below 1, got {args.dev} and {args.test}")
    for name in ("near", "leak"):
        if not 0 <= getattr(args, name) <= 1:
            p.error(f"--{name} must lie in [0, 1], got {getattr(args, name)}")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        report = prepare(args)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    sys.stdout.write(readable(report))
    print(f"wrote {args.out}: train.tsv, dev.tsv, test.tsv, report.json, report.txt")
    return report


if __name__ == "__main__":
    main()
