"""Fine-tuning data: task files (CSV, TSV, JSONL, optionally gzipped) and their batches.

A task file has a header naming its columns (CSV/TSV) or one JSON object per line (JSONL). The
columns to read are named by flags (`--text-col`, `--text-pair-col`, `--label-col`). Every bad
row ends in one error naming the file, the line and the field. `task_documents` reads the text
columns alone, as a corpus to continue pretraining on (train.py --text-col).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from minilm.data.corpus import clean_line, not_utf8, open_text, undecodable
from minilm.data.pretrain import pad


@dataclass
class Example:
    text: str
    pair: str | None
    label: str | None
    where: str  # "file:line", for error messages


def file_format(path) -> str:
    name = Path(path).name.lower().removesuffix(".gz")
    for ext in ("csv", "tsv", "jsonl"):
        if name.endswith("." + ext):
            return ext
    raise ValueError(f"{path}: unknown file type; expected .csv, .tsv or .jsonl (optionally .gz)")


SEPARATOR = {"csv": ",", "tsv": "\t"}
NOT_UTF8 = "not UTF-8 text"  # the problem records() gives a row holding bytes that are not UTF-8
csv.field_size_limit(2**31 - 1)  # a field of any length, as pandas reads it (csv's default stops at 131,072 characters)


def records(path, columns=()):
    """(line, row, problem) for every data row of a CSV, TSV or JSONL file: `row` is {column: value},
    or None when the row cannot be read, with `problem` saying why (not UTF-8, not JSON, a wrong
    count of fields). Problems of the whole file raise ValueError: a header that is not UTF-8, names
    a column twice or lacks one of `columns` (JSONL has no header: its rows are checked one by one)."""
    path = Path(path)
    fmt = file_format(path)
    with open_text(path, errors="surrogateescape") as f:  # a bad byte spoils its row, not the quoting of the rest
        if fmt == "jsonl":
            for lineno, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                if undecodable(raw):
                    yield lineno, None, NOT_UTF8
                    continue
                try:
                    record = json.loads(raw)
                except json.JSONDecodeError as e:
                    yield lineno, None, f"not valid JSON ({e.msg})"
                    continue
                if isinstance(record, dict):
                    yield lineno, record, None
                else:
                    yield lineno, None, f"expected a JSON object, got {type(record).__name__}"
            return
        # TSV files in the wild (SST-2, STS-B) carry bare quotes inside fields: no quoting for TSV
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if fmt == "tsv" else csv.reader(f)
        header = next(reader, None)
        if header is None:
            return
        if any(undecodable(name) for name in header):
            raise not_utf8(path)
        header = [name.strip() for name in header]  # " text , label " as spreadsheets write it
        repeated = sorted({name for name in header if header.count(name) > 1})
        if repeated:
            raise ValueError(f"{path}:1: the header names {', '.join(map(repr, repeated))} more than once")
        missing = [c for c in columns if c and c not in header]
        if missing:
            hint = ""
            other = next((d for d in ";|\t," if len(header) == 1 and d in header[0]), None)  # one column: another separator?
            if other:
                hint = f"; the columns look separated by {other!r}, and a .{fmt} file's are by {SEPARATOR[fmt]!r}"
            raise ValueError(f"{path}:1: no field {', '.join(map(repr, missing))} (found: {', '.join(header)}){hint}")
        lineno = reader.line_num + 1  # where the next record starts (a quoted field may span lines)
        for row in reader:
            start, lineno = lineno, reader.line_num + 1
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if any(undecodable(cell) for cell in row):
                yield start, None, NOT_UTF8
            elif len(row) != len(header):
                yield start, None, f"expected {len(header)} fields ({', '.join(header)}), found {len(row)}"
            else:
                yield start, dict(zip(header, row)), None


def field_value(row: dict, name: str, required: bool = True) -> str | None:
    """The value of one field as text, stripped (JSON's 1, 2.5 and true as a CSV writes them);
    ValueError when it is missing (None if not `required`), empty, or a JSON array or object."""
    if name not in row:
        if not required:
            return None
        raise ValueError(f"no field {name!r} (found: {', '.join(map(str, row))})")
    value = row[name]
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(f"field {name!r} is empty")
    if isinstance(value, (list, dict)):
        raise ValueError(f"field {name!r} is a JSON {'array' if isinstance(value, list) else 'object'}, not a text, number or true/false")
    return value.strip() if isinstance(value, str) else json.dumps(value)


def read_examples(path, text_col="text", pair_col=None, label_col="label", require_label=True) -> list[Example]:
    """Read a task file; errors name file, line and field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    examples = []
    for lineno, row, problem in records(path, (text_col, pair_col) + ((label_col,) if require_label else ())):
        where = f"{path}:{lineno}"
        if problem == NOT_UTF8:
            raise not_utf8(path)  # with the column of its first bad byte
        if problem:
            raise ValueError(f"{where}: {problem}")
        try:
            text = field_value(row, text_col)
            pair = field_value(row, pair_col) if pair_col else None
            label = field_value(row, label_col, required=require_label) if label_col else None
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        examples.append(Example(text, pair, label, where))
    if not examples:
        raise ValueError(f"{path}: no examples (the file is empty or holds only a header)")
    return examples


def task_documents(path, text_col="text", pair_col=None):
    """The unlabeled text of a task file as a pretraining corpus (task-adaptive pretraining,
    Gururangan et al. 2020): each row one document, its text one line and its pair text, when
    `pair_col` names one, the next. Rows are independent examples, so no document spans two of
    them. The label column is never read, which makes every split (test included) fair to use."""
    for e in read_examples(path, text_col, pair_col, label_col=None):
        doc = [line for line in (clean_line(t) for t in (e.text, e.pair) if t is not None) if line]
        if doc:
            yield doc


def label_set(examples) -> list[str]:
    """The sorted label names seen in the training examples."""
    return sorted({e.label for e in examples})


def label_ids(examples, labels: list[str]) -> list[int]:
    index = {name: i for i, name in enumerate(labels)}
    out = []
    for e in examples:
        if e.label not in index:
            raise ValueError(f"{e.where}: label {e.label!r} does not occur in the training data ({len(labels)} labels: {', '.join(labels[:10])}{' ...' if len(labels) > 10 else ''})")
        out.append(index[e.label])
    return out


class TaskBatches:
    """Seeded, length-grouped batches of tokenized examples. A subclass sets `ids` (one token id
    list per example), `batch_size` and `seed`, and writes `_collate(indices) -> batch`."""

    ids: list
    batch_size: int
    seed: int
    _epoch_cache: dict  # {epoch: its batches}, the latest epoch only

    def __len__(self):
        return len(self.ids)

    @property
    def steps_per_epoch(self) -> int:
        """Full batches per epoch (partial batches are dropped when training); at least one."""
        return max(1, len(self.ids) // self.batch_size)

    def _collate(self, index) -> dict:
        raise NotImplementedError

    def length(self, i: int) -> int:
        """Tokens of example i: what batches of similar length are grouped by."""
        return len(self.ids[i])

    POOL = 50  # batches per length-sorted pool
    MIN_POOLS = 10  # group by length only when an epoch holds at least this many pools

    def epoch_batches(self, epoch: int) -> list:
        """The batches of one epoch: a permutation seeded with (seed, epoch), cut into pools of
        50 batches, each pool sorted by length so a batch holds texts of similar length (little
        padding), and the batches shuffled again. Deterministic in (seed, epoch).

        Small data sets (fewer than 10 pools) are only shuffled: with few pools, length-sorted
        batches would correlate with whatever the length correlates with, labels included."""
        if epoch in self._epoch_cache:
            return self._epoch_cache[epoch]
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.ids))
        pool = self.POOL * self.batch_size
        if len(order) < self.MIN_POOLS * pool:
            pool = self.batch_size  # no sorting: plain shuffled batches
        batches = []
        for start in range(0, len(order), pool):
            chunk = sorted(order[start : start + pool], key=self.length)
            batches += [chunk[j : j + self.batch_size] for j in range(0, len(chunk), self.batch_size)]
        batches = [b for b in batches if len(b) == self.batch_size] or [list(order)]  # drop partial batches
        batches = batches[: self.steps_per_epoch]
        batches = [batches[i] for i in rng.permutation(len(batches))]
        self._epoch_cache = {epoch: batches}
        return batches

    def batch(self, step: int) -> dict:
        """Training batch `step` (epoch step // steps_per_epoch)."""
        epoch, k = divmod(step, self.steps_per_epoch)
        return self._collate(self.epoch_batches(epoch)[k])

    def by_length(self, batch_size: int | None = None):
        """Every example once as (indices, batch), shortest first: the fastest order to predict in,
        since each batch is padded only to its own longest row."""
        size = batch_size or self.batch_size
        order = sorted(range(len(self.ids)), key=self.length)
        for start in range(0, len(order), size):
            index = order[start : start + size]
            yield index, self._collate(index)

    def batches(self, batch_size: int | None = None):
        """Every example once, in file order (for evaluation and prediction)."""
        size = batch_size or self.batch_size
        for start in range(0, len(self.ids), size):
            yield self._collate(range(start, min(start + size, len(self.ids))))


def prompt_ids(tokenizer, template: str, texts: list[str], max_len: int) -> tuple[list[list[int]], list[int]]:
    """Each text inside a prompt template ("{text} It was [MASK]."), as [CLS] before text after [SEP]
    with the template's [MASK] as the mask token: (ids per text, the [MASK]'s position in each).
    A text too long for max_len loses its last tokens, never the template's."""
    tokenizer.require(["cls", "sep", "mask"], "a prompt template")
    mask = tokenizer.special_token("mask")
    before, after = (tokenizer.encode(part.replace("[MASK]", mask), add_special=False) for part in template.split("{text}"))
    budget = max_len - 2 - len(before) - len(after)
    if budget < 1:
        raise ValueError(f"the template {template!r} leaves no room for the text in {max_len} positions")
    bodies, _ = tokenizer.encode_batch(texts, add_special=False)
    ids = [[tokenizer.cls_id, *before, *body[:budget], *after, tokenizer.sep_id] for body in bodies]
    return ids, [row.index(tokenizer.mask_id, 1 if tokenizer.mask_id in before else 1 + len(before) + min(len(body), budget))
                 for row, body in zip(ids, bodies)]  # the template's mask, not one the text may hold


class ClassificationData(TaskBatches):
    """Tokenized text (pairs) with integer labels; `batch(step)` for training, `batches()` for eval."""

    def __init__(self, examples, tokenizer, labels: list[int] | None, max_len: int, batch_size: int, seed: int = 0,
                 pair_encoding: str = "cross", prompt: str = ""):
        texts = [e.text for e in examples]
        pairs = [e.pair for e in examples] if examples and examples[0].pair is not None else None
        self.pair_ids = None  # a bi-encoder's second texts, each encoded alone
        self.mask_positions = None  # with a prompt: where each row's [MASK] is
        if prompt:
            if pairs is not None:
                raise ValueError(f"{examples[0].where}: a prompt template reads one text, and this example has a second text")
            self.ids, self.mask_positions = prompt_ids(tokenizer, prompt, texts, max_len)
            self.segments = [[0] * len(ids) for ids in self.ids]
        elif pair_encoding == "bi":
            if pairs is None:
                where = examples[0].where if examples else "the input"
                raise ValueError(f"{where}: a bi-encoder (pair_encoding 'bi') compares two texts, and this example has no second text")
            self.ids, self.segments = tokenizer.encode_batch(texts, max_len=max_len)
            self.pair_ids, _ = tokenizer.encode_batch(pairs, max_len=max_len)
        else:
            self.ids, self.segments = tokenizer.encode_batch(texts, pairs, max_len=max_len)
        self.labels = labels
        self.teacher = None  # per example: a teacher's logits (L,) or value, for distillation (minilm/training/distill.py)
        self.pad_id, self.batch_size, self.seed = tokenizer.fill_id, batch_size, seed
        self._epoch_cache = {}

    def _collate(self, index) -> dict:
        input_ids = pad([self.ids[i] for i in index], self.pad_id)
        out = {
            "input_ids": input_ids,  # (B, T)
            "attention_mask": pad([[1] * len(self.ids[i]) for i in index], 0, input_ids.shape[1]),  # by length: the fill id may be real
            "segment_ids": pad([self.segments[i] for i in index], 0, input_ids.shape[1]),
        }
        if self.pair_ids is not None:  # (B, T'): the second texts, on their own
            del out["segment_ids"]
            out["pair_input_ids"] = pad([self.pair_ids[i] for i in index], self.pad_id)
            out["pair_attention_mask"] = pad([[1] * len(self.pair_ids[i]) for i in index], 0, out["pair_input_ids"].shape[1])
        if self.mask_positions is not None:
            out["mask_positions"] = torch.tensor([self.mask_positions[i] for i in index])  # (B,)
        if self.labels is not None:
            out["labels"] = torch.tensor([self.labels[i] for i in index])  # (B,)
        if self.teacher is not None:
            out["teacher"] = torch.as_tensor(np.stack([self.teacher[i] for i in index]), dtype=torch.float32)  # (B, L) or (B,)
        return out

    def length(self, i: int) -> int:
        return len(self.ids[i]) if self.pair_ids is None else max(len(self.ids[i]), len(self.pair_ids[i]))
