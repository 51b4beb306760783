"""Pretraining batches from a tokenized corpus, one deterministic batch per step.

The corpus is tokenized once into a flat token array with line and document boundaries. Batch
number `step` is drawn from a random generator seeded with (seed, step), so a resumed run (or
another process) rebuilds exactly the batch it would have seen: the data position is the step.

    clm      windows of T + 1 tokens from the stream  line \n line \n ... [EOS] next document ...
             (documents packed; with doc_mask, each token attends only within its own document and
             positions restart at 0 in each, as if the documents came in separate rows)
    mlm      [CLS] consecutive lines [SEP], masked as in BERT; with rows="random-lines", whole lines
             drawn at random instead (for corpora whose neighbouring lines are related entries, not a text)
    mlm+nsp  [CLS] A [SEP] B [SEP]: B follows A in its document half of the time, else a random
             passage of another document (label 0 = IsNext, 1 = NotNext, as in BERT's data code);
             a corpus without blank lines is read as pseudo-documents of consecutive lines
    denoise  T5 span corruption of a window of the stream (encoder input, decoder target)
    electra  the MLM batches: the generator reads them, the discriminator their originals with the
             generator's samples at the masked positions (minilm/training/electra.py)

Notation: B batch, T time.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from minilm.objectives import IGNORE_INDEX, mask_tokens, span_corrupt

OBJECTIVES = ("mlm", "mlm+nsp", "clm", "denoise", "electra")
ROWS = ("consecutive", "random-lines")  # what an MLM row holds: a run of corpus lines, or lines drawn at random
NEEDED = {"mlm": ("cls", "sep", "mask"), "mlm+nsp": ("cls", "sep", "mask"), "electra": ("cls", "sep", "mask"),
          "clm": ("eos",), "denoise": ("bos", "eos")}  # the special tokens each objective's batches hold


class TokenizedCorpus:
    """Every line of every document as token ids, held as one flat array plus offsets."""

    def __init__(self, docs, tokenizer, desc: str = "tokenizing"):
        lines = [line for doc in docs for line in doc]
        ids = []
        chunk = 8192
        for i in tqdm(range(0, len(lines), chunk), desc=desc, unit="chunk", leave=False):
            ids.extend(tokenizer.encode_batch(lines[i : i + chunk], add_special=False)[0])
        self.tokens = np.fromiter((t for line in ids for t in line), dtype=np.int32)
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        self.line_start = np.concatenate([[0], np.cumsum(lengths)])  # line i is tokens[start[i]:start[i+1]]
        doc_sizes = np.array([len(d) for d in docs], dtype=np.int64)
        self.doc_start = np.concatenate([[0], np.cumsum(doc_sizes)])  # doc d is lines doc_start[d]..doc_start[d+1]
        self.tokenizer = tokenizer

    @property
    def n_lines(self) -> int:
        return len(self.line_start) - 1

    @property
    def n_docs(self) -> int:
        return len(self.doc_start) - 1

    def line(self, i: int) -> np.ndarray:
        return self.tokens[self.line_start[i] : self.line_start[i + 1]]

    def stream(self) -> np.ndarray:
        """All documents as one stream: lines joined by a newline token (when the tokenizer has
        one, as byte-level BPE does), documents ended by [EOS] (when it has one)."""
        tk = self.tokenizer
        newline = tk.encode("\n", add_special=False)
        parts = []
        for d in range(self.n_docs):
            for i in range(self.doc_start[d], self.doc_start[d + 1]):
                parts.append(self.line(i))
                if i + 1 < self.doc_start[d + 1] and len(newline) == 1:
                    parts.append(np.array(newline, dtype=np.int32))
            if tk.eos_id is not None:
                parts.append(np.array([tk.eos_id], dtype=np.int32))
        return np.concatenate(parts)


def document_mask(input_ids, eos_id: int) -> dict:
    """For rows of packed documents: attention_mask (B, T, T), 1 where query and key lie in the
    same document, and position_ids (B, T) counted from each document's start. An [EOS] belongs
    to the document it ends."""
    B, T = input_ids.shape
    eos = (input_ids == eos_id).long()
    doc = torch.cumsum(eos, dim=1) - eos  # (B, T) document index within the row
    same = doc[:, :, None] == doc[:, None, :]  # (B, T, T)
    t = torch.arange(T).expand(B, T)
    starts = torch.cummax(torch.where(torch.cat([torch.ones(B, 1, dtype=torch.bool), eos[:, :-1].bool()], 1), t, 0), dim=1).values
    return {"attention_mask": same.long(), "position_ids": t - starts}


def pad(rows, value: int, length: int | None = None) -> torch.Tensor:
    """Right-pad lists of ids to one length -> (B, T) int64."""
    length = length or max(len(r) for r in rows)
    out = torch.full((len(rows), length), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.as_tensor(np.asarray(r[:length], dtype=np.int64))
    return out


def nsp_documents(corpus, seq_len: int) -> tuple[np.ndarray, str | None]:
    """The first line of each document next-sentence prediction draws from (n_docs + 1,), and a
    notice when these are not the corpus's own documents.

    NSP takes A from a document of two or more lines, an IsNext B from the lines after A, and a
    NotNext B from another document. A corpus that is one document (one sentence per line and no
    blank lines, a common shape) or whose documents are all one line long is cut instead, as a
    stream of lines, into pseudo-documents of n consecutive lines: n holds about two sequences
    (2 * seq_len tokens) at the corpus's mean line length, so that A and an IsNext B fit in one,
    with 2 <= n <= ceil(lines / 2), so that there are at least two. Only a corpus of fewer than
    three lines is refused: it cannot hold an A, the line after it and another document.
    """
    doc_start, n_lines = np.asarray(corpus.doc_start), corpus.n_lines
    if corpus.n_docs >= 2 and (np.diff(doc_start) >= 2).any():
        return doc_start, None
    if n_lines < 3:
        raise ValueError(f"next-sentence prediction needs a corpus of at least three lines (a sentence A, the line after "
                         f"it and a line of another document); this one has {n_lines}")
    per_line = max(len(corpus.tokens) / n_lines, 1.0)  # mean tokens per line
    n = int(min(max(2, round(2 * seq_len / per_line)), (n_lines + 1) // 2))
    starts = np.append(np.arange(0, n_lines, n), n_lines)
    why = "is one document (no blank line between documents)" if corpus.n_docs < 2 else "has no document of two or more lines"
    return starts, (f"notice: the corpus {why}; next-sentence prediction reads it as {len(starts) - 1:,} pseudo-documents "
                    f"of {n} consecutive lines (about {2 * seq_len} tokens each)")


class PretrainBatches:
    """`batch(step)` -> a dict of tensors for one objective; deterministic in (seed, step).
    `notice` is a line to show the user when NSP reads pseudo-documents (nsp_documents), else None."""

    def __init__(self, corpus: TokenizedCorpus, objective: str, seq_len: int, batch_size: int, seed: int = 0,
                 whole_word: bool = False, doc_mask: bool = False, rows: str = "consecutive"):
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}: expected one of {', '.join(OBJECTIVES)}")
        if rows not in ROWS:
            raise ValueError(f"unknown rows {rows!r}: expected one of {', '.join(ROWS)}")
        if rows != "consecutive" and objective not in ("mlm", "electra"):
            raise ValueError(f"rows of {rows} are for the mlm and electra objectives; {objective} reads consecutive text")
        self.rows = rows
        self.corpus, self.objective = corpus, objective
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed
        self.tk = corpus.tokenizer
        self.tk.require(NEEDED[objective], f"the {objective} objective")
        if objective == "denoise" and not self.tk.sentinel_ids:
            raise ValueError("the denoise objective needs the sentinel tokens [X0], [X1], ..., which the tokenizer does not have")
        self.doc_mask = doc_mask
        self.continuation = None  # (V,) bool: WordPiece '##' pieces, for whole-word masking
        if whole_word:
            vocab = self.tk.backend.get_vocab()
            if not any(t.startswith("##") for t in vocab):
                raise ValueError("whole-word masking needs a WordPiece tokenizer ('##' continuation pieces)")
            self.continuation = torch.zeros(self.tk.vocab_size, dtype=torch.bool)
            self.continuation[[i for t, i in vocab.items() if t.startswith("##")]] = True
        if objective in ("clm", "denoise"):
            self.stream = corpus.stream()
            if len(self.stream) <= seq_len + 1:
                raise ValueError(f"the corpus has {len(self.stream)} tokens, too few for windows of {seq_len + 1}")
        self.doc_start, self.notice = np.asarray(corpus.doc_start), None  # the documents NSP draws from
        if objective == "mlm+nsp":
            self.doc_start, self.notice = nsp_documents(corpus, seq_len)
        doc_sizes = np.diff(self.doc_start)  # lines per document
        usable = np.where(doc_sizes >= 2, doc_sizes, 0)  # NSP draws A from documents of 2+ lines, by size
        self.doc_weights = usable / max(usable.sum(), 1)

    def rng(self, step: int):
        return np.random.default_rng([self.seed, step]), torch.Generator().manual_seed(self.seed * 1_000_003 + step)

    def batch(self, step: int) -> dict:
        rng, gen = self.rng(step)
        return getattr(self, "_" + self.objective.replace("+", "_"))(rng, gen)

    # -- causal LM ---------------------------------------------------------------------------------
    def _clm(self, rng, gen):
        T = self.seq_len
        starts = rng.integers(0, len(self.stream) - T, size=self.batch_size)  # windows [s, s + T] inside the stream
        windows = torch.as_tensor(np.stack([self.stream[s : s + T + 1] for s in starts]).astype(np.int64))
        batch = {"input_ids": windows[:, :-1], "labels": windows[:, 1:]}  # (B, T) each: predict the next token
        if self.doc_mask:
            batch.update(document_mask(batch["input_ids"], self.tk.eos_id))
        return batch

    # -- masked LM -----------------------------------------------------------------------------------
    def _lines_from(self, first: int, budget: int, stop: int) -> list:
        """Whole consecutive lines from `first` (< stop) up to `budget` tokens (the first line truncated if longer)."""
        out = []
        i = first
        while i < stop and len(out) < budget:
            out.extend(self.corpus.line(i).tolist())
            i += 1
        return out[:budget]

    def _mask(self, input_ids, gen):
        word_starts = None if self.continuation is None else ~self.continuation[input_ids]
        inputs, labels = mask_tokens(input_ids, self.tk.special_ids, self.tk.mask_id, self.tk.vocab_size, gen, word_starts=word_starts)
        return inputs, labels

    def _random_lines(self, first: int, budget: int, rng) -> list:
        """Whole lines drawn at random (`first`, then others) up to `budget` tokens: a row in which
        no line is the neighbour of another, so a word masked in one is not written in the next."""
        out = self.corpus.line(first).tolist()
        while len(out) < budget:
            out.extend(self.corpus.line(int(rng.integers(0, self.corpus.n_lines))).tolist())
        return out[:budget]

    def _mlm(self, rng, gen):
        c = self.corpus
        rows = []
        for line in rng.integers(0, c.n_lines, size=self.batch_size):
            body = (self._lines_from(int(line), self.seq_len - 2, c.n_lines) if self.rows == "consecutive"
                    else self._random_lines(int(line), self.seq_len - 2, rng))
            rows.append([self.tk.cls_id, *body, self.tk.sep_id])
        input_ids = pad(rows, self.tk.fill_id)
        attention_mask = pad([[1] * len(r) for r in rows], 0)  # by length: the fill id may be real
        inputs, labels = self._mask(input_ids, gen)
        return {"input_ids": inputs, "attention_mask": attention_mask, "labels": labels}

    def _electra(self, rng, gen):  # ELECTRA corrupts MLM batches further, with its generator's samples
        return self._mlm(rng, gen)

    # -- masked LM + next-sentence prediction ------------------------------------------------------
    def _mlm_nsp(self, rng, gen):
        c, budget, doc_start = self.corpus, self.seq_len - 3, self.doc_start
        n_docs = len(doc_start) - 1
        rows, segments, nsp = [], [], []
        for _ in range(self.batch_size):
            d = int(rng.choice(n_docs, p=self.doc_weights))
            first, stop = int(doc_start[d]), int(doc_start[d + 1])
            # A: whole lines from a random one until a random target length, leaving a line for B
            i, target, a = int(rng.integers(first, stop - 1)), int(rng.integers(budget // 4, budget // 2 + 1)), []
            while True:
                a.extend(c.line(i).tolist())
                i += 1
                if len(a) >= target or i >= stop - 1:
                    break
            a = a[: budget // 2]
            if rng.random() < 0.5:
                b, label = self._lines_from(i, budget - len(a), stop), 0  # IsNext: the lines after A
            else:
                other = int(rng.integers(0, n_docs - 1))
                other += other >= d  # any document but d
                o_first, o_stop = int(doc_start[other]), int(doc_start[other + 1])
                b, label = self._lines_from(int(rng.integers(o_first, o_stop)), budget - len(a), o_stop), 1  # NotNext
            rows.append([self.tk.cls_id, *a, self.tk.sep_id, *b, self.tk.sep_id])
            segments.append([0] * (len(a) + 2) + [1] * (len(b) + 1))
            nsp.append(label)
        input_ids = pad(rows, self.tk.fill_id)
        attention_mask = pad([[1] * len(r) for r in rows], 0)  # by length: the fill id may be real
        inputs, labels = self._mask(input_ids, gen)
        return {
            "input_ids": inputs,
            "attention_mask": attention_mask,
            "segment_ids": pad(segments, 0, input_ids.shape[1]),
            "labels": labels,
            "nsp_labels": torch.tensor(nsp),
        }

    # -- span corruption ---------------------------------------------------------------------------
    def _denoise(self, rng, gen):
        T = self.seq_len
        sources, targets = [], []
        for s in rng.integers(0, len(self.stream) - T + 2, size=self.batch_size):  # windows [s, s + T - 1)
            src, tgt = span_corrupt(self.stream[s : s + T - 1], self.tk.sentinel_ids, self.tk.eos_id, rng)
            sources.append(src[:T])
            targets.append(tgt[: T - 1])
        input_ids = pad(sources, self.tk.fill_id)
        labels = pad(targets, IGNORE_INDEX)
        decoder_input_ids = pad([[self.tk.bos_id, *t[:-1]] for t in targets], self.tk.fill_id, labels.shape[1])  # shift right
        return {
            "input_ids": input_ids,
            "attention_mask": pad([[1] * len(r) for r in sources], 0),  # by length: the fill id may be real
            "decoder_input_ids": decoder_input_ids,
            "decoder_attention_mask": (labels != IGNORE_INDEX).long(),
            "labels": labels,
        }
