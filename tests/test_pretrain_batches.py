"""Pretraining batches: keys and shapes per objective, determinism in (seed, step), and the structure
of each objective's examples (CLM shift, NSP segments and continuations, T5 decoder inputs)."""

import numpy as np
import pytest
import torch

from minilm.data.pretrain import OBJECTIVES, PretrainBatches, TokenizedCorpus
from minilm.objectives import IGNORE_INDEX
from minilm.tokenizer import Tokenizer

# Every line is "<document word> <line word> filler ...", so a token id tells which document and line it opens.
DOC_WORDS = "apple banana cherry damson elder fig grape hazel".split()
LINE_WORDS = "one two three four five six seven eight nine ten eleven twelve".split()
FILLER = "the a of sun moon rain wind snow fire ice sea sky".split()
DOC_LINES = [5, 3, 12, 2, 7, 4, 9, 1]  # the last document has one line: never an A segment
T, B = 48, 8


def make_docs():
    rng = np.random.default_rng(0)
    return [
        [" ".join([DOC_WORDS[d], LINE_WORDS[i], *rng.choice(FILLER, size=rng.integers(2, 7))]) for i in range(n)]
        for d, n in enumerate(DOC_LINES)
    ]


@pytest.fixture(scope="module")
def docs():
    return make_docs()


@pytest.fixture(scope="module")
def wordpiece(docs):
    tk = Tokenizer.train([line for doc in docs for line in doc] * 2, "wordpiece", vocab_size=300)
    for word in DOC_WORDS + LINE_WORDS:
        assert tk.encode(word, add_special=False) == [tk.token_to_id(word)]  # each marker is one token
    return tk


@pytest.fixture(scope="module")
def bpe(docs):
    return Tokenizer.train([line for doc in docs for line in doc] * 2, "bpe", vocab_size=400)


@pytest.fixture(scope="module")
def corpora(docs, wordpiece, bpe):
    return {"wordpiece": TokenizedCorpus(docs, wordpiece), "bpe": TokenizedCorpus(docs, bpe)}


def batches(corpora, objective, seed=0, seq_len=T, batch_size=B):
    corpus = corpora["bpe" if objective in ("clm", "denoise") else "wordpiece"]
    return PretrainBatches(corpus, objective, seq_len, batch_size, seed=seed)


def originals(batch):
    """The token ids before masking: labels hold them at the masked positions."""
    return torch.where(batch["labels"] != IGNORE_INDEX, batch["labels"], batch["input_ids"])


def test_tokenized_corpus_offsets_and_stream(docs, corpora, wordpiece, bpe):
    for tk, corpus in ((wordpiece, corpora["wordpiece"]), (bpe, corpora["bpe"])):
        assert corpus.n_docs == len(DOC_LINES) and corpus.n_lines == sum(DOC_LINES)
        assert corpus.doc_start.tolist() == np.concatenate([[0], np.cumsum(DOC_LINES)]).tolist()
        flat = [line for doc in docs for line in doc]
        for i in (0, 7, corpus.n_lines - 1):
            assert corpus.line(i).tolist() == tk.encode(flat[i], add_special=False)
    stream = corpora["bpe"].stream()
    assert stream[-1] == bpe.eos_id and (stream == bpe.eos_id).sum() == len(DOC_LINES)
    ends = np.flatnonzero(stream == bpe.eos_id)
    assert bpe.decode(stream[: ends[0]].tolist()) == "\n".join(docs[0])  # lines joined by a newline token
    assert bpe.decode(stream[ends[0] + 1 : ends[1]].tolist()) == "\n".join(docs[1])
    wp_stream = corpora["wordpiece"].stream()  # WordPiece has no newline token: lines simply follow
    assert len(wp_stream) == len(corpora["wordpiece"].tokens) + len(DOC_LINES)


@pytest.mark.parametrize(
    "objective, keys",
    [
        ("mlm", {"input_ids", "attention_mask", "labels"}),
        ("mlm+nsp", {"input_ids", "attention_mask", "segment_ids", "labels", "nsp_labels"}),
        ("clm", {"input_ids", "labels"}),
        ("denoise", {"input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask", "labels"}),
    ],
)
def test_keys_shapes_and_determinism(corpora, objective, keys):
    data = batches(corpora, objective)
    batch = data.batch(3)
    assert set(batch) == keys
    for name, x in batch.items():
        assert x.dtype == torch.long, name
        if name == "nsp_labels":
            assert x.shape == (B,) and set(x.tolist()) <= {0, 1}
        elif name.startswith("decoder") or (objective == "denoise" and name == "labels"):
            assert x.shape == batch["labels"].shape and x.shape[0] == B and x.shape[1] <= T - 1
        else:
            assert x.shape == batch["input_ids"].shape and x.shape[0] == B and x.shape[1] <= T
    if objective == "clm":
        assert batch["input_ids"].shape == (B, T)

    def same(a, b):
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    assert same(batch, data.batch(3))  # called twice
    assert same(batch, batches(corpora, objective).batch(3))  # a new object, e.g. after a restart
    assert not same(batch, data.batch(4))  # another step
    assert not same(batch, batches(corpora, objective, seed=1).batch(3))  # another seed


def test_clm_labels_are_inputs_shifted_by_one(corpora):
    data = batches(corpora, "clm")
    stream = corpora["bpe"].stream().tolist()
    text = ",".join(map(str, stream)) + ","
    starts = set()
    for step in range(5):
        batch = data.batch(step)
        x, y = batch["input_ids"], batch["labels"]
        assert torch.equal(y[:, :-1], x[:, 1:])
        for row in torch.cat([x, y[:, -1:]], dim=1).tolist():  # each row is a window of the stream
            window = ",".join(map(str, row)) + ","
            assert window in text
            starts.add(window)
    assert len(starts) > 20  # windows start all over the stream


def test_clm_windows_reach_the_end_of_the_stream(docs, bpe):
    corpus = TokenizedCorpus([docs[0]], bpe)
    stream = corpus.stream()
    data = PretrainBatches(corpus, "clm", len(stream) - 2, batch_size=32)  # two windows fit: starting at 0 and at 1
    last_labels = torch.cat([data.batch(step)["labels"][:, -1] for step in range(4)])
    assert stream[-2] != bpe.eos_id
    assert (last_labels == int(stream[-2])).any()  # the window starting at 0
    assert (last_labels == bpe.eos_id).any()  # the window starting at 1, which predicts the final [EOS]


def segment_parts(batch, row):
    """(A, B) token ids (unmasked) of one mlm+nsp row, checking the framing on the way."""
    seg, mask, ids = batch["segment_ids"][row], batch["attention_mask"][row], originals(batch)[row]
    n = int(mask.sum())
    n0 = int((seg[:n] == 0).sum())
    assert seg[:n].tolist() == [0] * n0 + [1] * (n - n0) and (seg[n:] == 0).all() and (mask[n:] == 0).all()
    inputs = batch["input_ids"][row]
    assert inputs[0] == ids[0] and inputs[n0 - 1] == ids[n0 - 1] and inputs[n - 1] == ids[n - 1]  # specials unmasked
    return ids[:n0].tolist(), ids[n0:n].tolist()


def markers(tk, tokens):
    """[(document, line)] of the lines that start in `tokens`."""
    doc_of = {tk.token_to_id(w): d for d, w in enumerate(DOC_WORDS)}
    line_of = {tk.token_to_id(w): i for i, w in enumerate(LINE_WORDS)}
    return [(doc_of[t], line_of.get(tokens[k + 1]) if k + 1 < len(tokens) else None) for k, t in enumerate(tokens) if t in doc_of]


def consecutive(marks, doc, first):
    """marks are lines first, first + 1, ... of doc (the last one may be cut before its line word)."""
    expected = [(doc, first + k) for k in range(len(marks))]
    return marks == expected or marks[:-1] + [(doc, None)] == expected[:-1] + [(doc, None)] == marks


def test_mlm_nsp_segments_and_continuations(corpora, wordpiece):
    tk = wordpiece
    data = batches(corpora, "mlm+nsp", batch_size=16)
    labels_seen = []
    for step in range(25):
        batch = data.batch(step)
        for row in range(16):
            a, b = segment_parts(batch, row)
            assert a[0] == tk.cls_id and a[-1] == tk.sep_id and b[-1] == tk.sep_id
            assert tk.sep_id not in a[1:-1] + b[:-1] and tk.pad_id not in a + b
            a, b = a[1:-1], b[:-1]
            assert 0 < len(a) <= (T - 3) // 2 and b and len(a) + len(b) <= T - 3
            ma, mb = markers(tk, a), markers(tk, b)
            assert a[0] == tk.token_to_id(DOC_WORDS[ma[0][0]]) and b[0] == tk.token_to_id(DOC_WORDS[mb[0][0]])  # whole lines
            d, first = ma[0]
            assert DOC_LINES[d] >= 2
            assert consecutive(ma, d, first)  # A: consecutive lines of one document (the last maybe cut)
            last = first + len(ma) - 1
            label = int(batch["nsp_labels"][row])
            if label == 0:  # IsNext: B opens with the line right after A's last line, in the same document
                assert mb[0] == (d, last + 1)
                assert consecutive(mb, d, last + 1)
            else:  # NotNext: B comes from another document
                assert all(m[0] != d for m in mb)
                assert len({m[0] for m in mb}) == 1  # ... and stays in it
            labels_seen.append(label)
    assert abs(np.mean(labels_seen) - 0.5) < 0.1  # 400 draws: half IsNext
    # the MLM part masks only real tokens, as in plain MLM
    batch = data.batch(0)
    chosen = batch["labels"] != IGNORE_INDEX
    assert chosen.any() and not torch.isin(originals(batch)[chosen], torch.tensor(sorted(tk.special_ids))).any()


def test_mlm_rows_are_consecutive_lines_framed_and_masked(corpora, wordpiece):
    tk = wordpiece
    corpus = corpora["wordpiece"]
    flat = corpus.tokens.tolist()
    text = "," + ",".join(map(str, flat)) + ","
    batch = batches(corpora, "mlm", batch_size=32).batch(0)
    ids = originals(batch)
    chosen = batch["labels"] != IGNORE_INDEX
    assert 0.05 < chosen.sum() / batch["attention_mask"].sum() < 0.25
    for row in range(32):
        n = int(batch["attention_mask"][row].sum())
        tokens = ids[row, :n].tolist()
        assert tokens[0] == tk.cls_id and tokens[-1] == tk.sep_id and n <= T
        assert (batch["input_ids"][row, n:] == tk.pad_id).all() and not chosen[row, n:].any()
        assert not chosen[row, 0] and not chosen[row, n - 1]
        assert "," + ",".join(map(str, tokens[1:-1])) + "," in text  # a run of the corpus
        assert markers(tk, tokens[1:-1])[0][1] is not None and tokens[1] in {tk.token_to_id(w) for w in DOC_WORDS}


def test_mlm_random_line_rows_hold_whole_lines_drawn_apart(corpora, wordpiece):
    """rows="random-lines": each row is whole corpus lines (the last one cut at the row's end), drawn
    at random rather than read in a run; the same batch for the same (seed, step)."""
    tk, corpus = wordpiece, corpora["wordpiece"]
    index = {tuple(corpus.line(i).tolist()): i for i in range(corpus.n_lines)}
    assert len(index) == corpus.n_lines  # every line differs (its document and line words)
    fresh = lambda: PretrainBatches(corpus, "mlm", T, 32, seed=0, rows="random-lines")  # noqa: E731
    batch = fresh().batch(3)
    assert all(torch.equal(batch[k], fresh().batch(3)[k]) for k in batch)
    ids, pairs, neighbours = originals(batch), 0, 0
    for row in range(32):
        n = int(batch["attention_mask"][row].sum())
        tokens = ids[row, :n].tolist()
        assert tokens[0] == tk.cls_id and tokens[-1] == tk.sep_id and n <= T
        body, k, drawn = tokens[1:-1], 0, []
        while k < len(body):  # cut the body into corpus lines, the last one possibly cut short
            drawn.append(next(i for line, i in index.items() if tuple(body[k : k + len(line)]) == line[: len(body) - k]))
            k += len(corpus.line(drawn[-1]))
        pairs += len(drawn) - 1
        neighbours += sum(b == a + 1 for a, b in zip(drawn, drawn[1:]))
    assert pairs > 64 and neighbours / pairs < 0.2  # consecutive rows: every pair is a line and the next (1.0)
    with pytest.raises(ValueError, match="rows of random-lines are for the mlm and electra objectives"):
        PretrainBatches(corpora["wordpiece"], "mlm+nsp", T, B, rows="random-lines")


def reconstruct(source, target, sentinels):
    groups = []
    for tok in target:
        if tok in sentinels:
            groups.append([])
        else:
            groups[-1].append(tok)
    out, k = [], 0
    for tok in source:
        if tok in sentinels:
            out.extend(groups[k])
            k += 1
        else:
            out.append(tok)
    assert k == len(groups)
    return out


def test_denoise_decoder_inputs_and_reconstruction(corpora, bpe):
    tk = bpe
    data = batches(corpora, "denoise")
    stream = corpora["bpe"].stream().tolist()
    text = "," + ",".join(map(str, stream)) + ","
    sentinels = set(tk.sentinel_ids)
    for step in range(3):
        batch = data.batch(step)
        for row in range(B):
            n_src = int(batch["attention_mask"][row].sum())
            n_tgt = int(batch["decoder_attention_mask"][row].sum())
            src = batch["input_ids"][row, :n_src].tolist()
            tgt = batch["labels"][row, :n_tgt].tolist()
            assert (batch["labels"][row, n_tgt:] == IGNORE_INDEX).all()
            assert (batch["input_ids"][row, n_src:] == tk.pad_id).all()
            dec = batch["decoder_input_ids"][row]
            assert dec[0] == tk.bos_id and dec[1:n_tgt].tolist() == tgt[:-1]  # labels shifted right after [BOS]
            assert (dec[n_tgt:] == tk.pad_id).all()
            assert src[-1] == tk.eos_id and tgt[-1] == tk.eos_id
            assert src[0] != tgt[0] or src[0] in sentinels
            original = reconstruct(src[:-1], tgt[:-1], sentinels)
            assert len(original) == T - 1
            assert "," + ",".join(map(str, original)) + "," in text  # a window of the stream
            noise = len(tgt) - 1 - sum(t in sentinels for t in tgt)
            assert noise == round(0.15 * (T - 1))


@pytest.mark.parametrize("split", ["one document", "one-line documents"])
def test_nsp_reads_a_corpus_without_blank_lines_as_pseudo_documents(docs, wordpiece, split):
    """One sentence per line and no blank lines (or a blank line after every line): NSP cuts the
    lines into pseudo-documents of n consecutive lines, n about two sequences' worth of tokens."""
    lines = [line for doc in docs for line in doc]
    corpus = TokenizedCorpus([lines] if split == "one document" else [[line] for line in lines], wordpiece)
    data = PretrainBatches(corpus, "mlm+nsp", T, B)
    n = round(2 * T / (len(corpus.tokens) / len(lines)))
    assert 2 < n < len(lines) // 2 and data.doc_start.tolist() == [*range(0, len(lines), n), len(lines)]
    why = "is one document (no blank line" if split == "one document" else "has no document of two or more lines"
    assert data.notice.startswith(f"notice: the corpus {why}") and data.notice.endswith(
        f"reads it as {len(data.doc_start) - 1} pseudo-documents of {n} consecutive lines (about {2 * T} tokens each)")
    line_of = {mark: g for g, mark in enumerate((d, i) for d, size in enumerate(DOC_LINES) for i in range(size))}
    labels = []
    for step in range(10):
        batch = data.batch(step)
        for row in range(B):
            a, b = segment_parts(batch, row)
            ma, mb = markers(wordpiece, a[1:-1]), markers(wordpiece, b[:-1])
            first = line_of[ma[0]]
            last = first + len(ma) - 1  # A: whole consecutive lines of the stream
            assert all(m[1] is None or line_of[m] == first + k for k, m in enumerate(ma))
            label = int(batch["nsp_labels"][row])
            if mb[0][1] is not None:
                b_first = line_of[mb[0]]
                assert (b_first == last + 1 and b_first // n == first // n) if label == 0 else b_first // n != first // n
            labels.append(label)
    assert 0.3 < np.mean(labels) < 0.7


def test_errors(docs, corpora, wordpiece, bpe):
    with pytest.raises(ValueError, match=r"unknown objective 'nsp': expected one of mlm, mlm\+nsp, clm, denoise, electra"):
        PretrainBatches(corpora["wordpiece"], "nsp", T, B)
    assert OBJECTIVES == ("mlm", "mlm+nsp", "clm", "denoise", "electra")
    message = r"next-sentence prediction needs a corpus of at least three lines \(a sentence A, the line after it and a line "
    for lines in ([docs[7]], [docs[3]], [[docs[0][0]], [docs[1][0]]]):  # one line; two lines, in one or two documents
        with pytest.raises(ValueError, match=message + rf"of another document\); this one has {sum(map(len, lines))}"):
            PretrainBatches(TokenizedCorpus(lines, wordpiece), "mlm+nsp", T, B)
    PretrainBatches(TokenizedCorpus([docs[3], docs[7]], wordpiece), "mlm+nsp", T, B).batch(0)  # the minimum works
    PretrainBatches(TokenizedCorpus([docs[0][:3]], wordpiece), "mlm+nsp", T, B).batch(0)  # so do three lines in one document
    short = TokenizedCorpus([["apple one sun"]], bpe)
    n = len(short.stream())
    for objective in ("clm", "denoise"):
        with pytest.raises(ValueError, match=rf"the corpus has {n} tokens, too few for windows of {T + 1}"):
            PretrainBatches(short, objective, T, B)


def test_document_mask_makes_packed_documents_independent():
    """A document packed after another in one row gets, under the document mask, the logits it
    gets alone in its own row starting at position 0."""
    from conftest import tiny_model
    from minilm.data.pretrain import document_mask

    eos = 6
    a, b = [10, 11, 12, eos], [20, 21, 22, 23, 24]
    packed = torch.tensor([a + b])  # (1, 9)
    extra = document_mask(packed, eos)
    assert extra["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1, 2, 3, 4]]
    assert extra["attention_mask"][0, 5].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1]
    model = tiny_model("decoder")
    together = model(packed, extra["attention_mask"], extra["position_ids"])
    alone = model(torch.tensor([b]))
    torch.testing.assert_close(together[0, 4:], alone[0], rtol=1e-5, atol=1e-5)
    unmasked = model(packed)
    assert not torch.allclose(unmasked[0, 4:], alone[0], atol=1e-3)  # without the mask, b sees a
