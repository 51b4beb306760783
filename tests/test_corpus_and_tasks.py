"""Reading corpora and task files (formats and every error message), and fine-tuning batches."""

import gzip
import json

import numpy as np
import pytest
import torch

from minilm.data.corpus import read_documents
from minilm.data.tasks import ClassificationData, Example, label_ids, label_set, read_examples
from minilm.tokenizer import Tokenizer

CORPUS = "First line of doc one.\n  second   line\tof doc one \n\n\nDoc two, only line.\n \t \nDoc three cafe\u0301.\nend\n"
DOCS = [["First line of doc one.", "second line of doc one"], ["Doc two, only line."], ["Doc three caf\u00e9.", "end"]]


def write(path, text, encoding="utf-8"):
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(text.encode(encoding) if isinstance(text, str) else text)
    elif isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding=encoding)
    return path


# -- corpora -------------------------------------------------------------------------------------
def test_read_documents_text_blank_lines_separate_documents(tmp_path):
    assert read_documents(write(tmp_path / "c.txt", CORPUS)) == DOCS  # whitespace collapsed, NFC
    assert read_documents(write(tmp_path / "one.txt", "a\nb\nc")) == [["a", "b", "c"]]  # no blank line: one document


def test_read_documents_gz(tmp_path):
    assert read_documents(write(tmp_path / "c.txt.gz", CORPUS)) == DOCS


def test_read_documents_folder_in_sorted_order(tmp_path):
    write(tmp_path / "b.txt", "bee\n\nbee two")
    write(tmp_path / "a" / "nested.txt.gz", "nested")
    write(tmp_path / "c.jsonl", json.dumps({"text": "jay\nson"}) + "\n")
    write(tmp_path / "README.md", "not corpus text")
    write(tmp_path / "labels.csv", "text,label\nx,y\n")
    assert read_documents(tmp_path) == [["nested"], ["bee"], ["bee two"], ["jay", "son"]]


def test_read_documents_jsonl(tmp_path):
    lines = [
        {"text": "one\n\ntwo  lines", "id": 1},
        {"text": "   "},  # nothing left: skipped
        {"body": "other field", "text": "x"},
    ]
    path = write(tmp_path / "c.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    assert read_documents(path) == [["one", "two lines"], ["x"]]
    path = write(tmp_path / "d.jsonl.gz", json.dumps({"body": "from\nbody"}) + "\n")
    assert read_documents(path, text_field="body") == [["from", "body"]]


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"text": "ok"}', "", '{"text": "broken"'], r"c\.jsonl:3: not valid JSON \(.+\)"),
        (['{"text": "ok"}', '["text"]'], r"c\.jsonl:2: expected an object with a string field 'text'"),
        (['{"body": "no text"}'], r"c\.jsonl:1: expected an object with a string field 'text'"),
        (['{"text": 5}'], r"c\.jsonl:1: expected an object with a string field 'text'"),
    ],
)
def test_read_documents_jsonl_errors_name_file_and_line(tmp_path, lines, message):
    with pytest.raises(ValueError, match=message):
        read_documents(write(tmp_path / "c.jsonl", "\n".join(lines) + "\n"))


def test_read_documents_errors(tmp_path):
    with pytest.raises(ValueError, match=r"empty\.txt: the corpus is empty"):
        read_documents(write(tmp_path / "empty.txt", "\n  \n\t\n"))
    with pytest.raises(FileNotFoundError, match=r"missing\.txt: no such corpus file or folder"):
        read_documents(tmp_path / "missing.txt")
    write(tmp_path / "folder" / "notes.md", "x")
    with pytest.raises(FileNotFoundError, match=r"folder: no text files \(\.txt, .*\) in this folder"):
        read_documents(tmp_path / "folder")


@pytest.mark.parametrize("name", ["latin1.txt", "latin1.txt.gz"])
def test_read_documents_not_utf8(tmp_path, name):
    path = write(tmp_path / name, "ok line\ncaf\u00e9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"{name.replace('.', '[.]')}:2: not UTF-8 text \(column 4: invalid continuation byte\)"):
        read_documents(path)


def test_not_utf8_error_names_the_line_in_a_large_file(tmp_path):
    good = b"hello world\n" * 2000
    path = write(tmp_path / "big.txt", good + b"bad \xff byte\n")
    with pytest.raises(ValueError, match=r"big\.txt:2001: not UTF-8 text \(column 5:"):
        read_documents(path)


# -- task files ------------------------------------------------------------------------------------
def test_read_csv_with_quoted_commas(tmp_path):
    path = write(tmp_path / "t.csv", 'text,label\n"hello, world",pos\n\nsaid "hi" there,neg\n"a ""quoted"" word",pos\n')
    assert read_examples(path) == [
        Example("hello, world", None, "pos", f"{path}:2"),
        Example('said "hi" there', None, "neg", f"{path}:4"),
        Example('a "quoted" word', None, "pos", f"{path}:5"),
    ]


def test_read_tsv_keeps_bare_quotes(tmp_path):
    # SST-2 style: no quoting in TSV, a field may start with or hold a lone double quote
    path = write(tmp_path / "t.tsv", 'sentence\tlabel\nit \'s a "good" movie \t1\n" starts with a quote\t0\n')
    examples = read_examples(path, text_col="sentence")
    assert [(e.text, e.label, e.where) for e in examples] == [
        ('it \'s a "good" movie', "1", f"{path}:2"),
        ('" starts with a quote', "0", f"{path}:3"),
    ]


def test_read_pairs_jsonl_and_gz(tmp_path):
    rows = [{"premise": "a cat", "hypothesis": "an animal", "label": 1}, {"premise": "b", "hypothesis": "c", "label": "no"}]
    for name in ("p.jsonl", "p.jsonl.gz"):
        path = write(tmp_path / name, json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n")
        examples = read_examples(path, text_col="premise", pair_col="hypothesis")
        assert examples == [Example("a cat", "an animal", "1", f"{path}:1"), Example("b", "c", "no", f"{path}:3")]
    path = write(tmp_path / "p.csv.gz", "premise,hypothesis,label\nx,y,z\n")
    assert read_examples(path, text_col="premise", pair_col="hypothesis") == [Example("x", "y", "z", f"{path}:2")]


def test_read_examples_without_labels(tmp_path):
    path = write(tmp_path / "test.csv", "text\nunlabelled\n")
    assert read_examples(path, require_label=False) == [Example("unlabelled", None, None, f"{path}:2")]
    with pytest.raises(ValueError, match=r"test\.csv:1: no field 'label' \(found: text\)"):
        read_examples(path)


@pytest.mark.parametrize(
    "name, content, kwargs, message",
    [
        ("t.csv", "sentence,label\nx,pos\n", {}, r"t\.csv:1: no field 'text' \(found: sentence, label\)"),
        ("t.csv", "text,label,extra\nx,pos,1\ny, ,2\n", {}, r"t\.csv:3: field 'label' is empty"),
        ("t.tsv", "text\tlabel\nx\tpos\n\t \tneg\n", {}, r"t\.tsv:3: expected 2 fields \(text, label\), found 3"),
        ("t.tsv", "text\tlabel\nx\tpos\ny\n", {}, r"t\.tsv:3: expected 2 fields \(text, label\), found 1"),
        ("t.csv", "text,label\nx,pos,extra\n", {}, r"t\.csv:2: expected 2 fields \(text, label\), found 3"),
        ("t.jsonl", '{"text": "x", "label": "a"}\n{"text": "y", "label": }\n', {}, r"t\.jsonl:2: not valid JSON \(.+\)"),
        ("t.jsonl", '["x", "a"]\n', {}, r"t\.jsonl:1: expected a JSON object, got list"),
        ("t.jsonl", '{"text": "x"}\n', {}, r"t\.jsonl:1: no field 'label' \(found: text\)"),
        ("t.jsonl", '{"text": null, "label": "a"}\n', {}, r"t\.jsonl:1: field 'text' is empty"),
        ("t.jsonl", '{"text": "x", "label": "a"}\n', {"pair_col": "hyp"}, r"t\.jsonl:1: no field 'hyp' \(found: text, label\)"),
        ("t.csv", "", {}, r"t\.csv: no examples \(the file is empty or holds only a header\)"),
        ("t.csv", "text,label\n\n", {}, r"t\.csv: no examples \(the file is empty or holds only a header\)"),
        ("t.jsonl", "\n\n", {}, r"t\.jsonl: no examples"),
        ("t.txt", "text,label\nx,y\n", {}, r"t\.txt: unknown file type; expected \.csv, \.tsv or \.jsonl \(optionally \.gz\)"),
        ("t.csv.zip", "text,label\nx,y\n", {}, r"t\.csv\.zip: unknown file type"),
    ],
)
def test_read_examples_errors_name_file_line_and_field(tmp_path, name, content, kwargs, message):
    with pytest.raises(ValueError, match=message):
        read_examples(write(tmp_path / name, content), **kwargs)


def test_read_examples_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.csv: no such file"):
        read_examples(tmp_path / "nope.csv")


@pytest.mark.parametrize(
    "name, content",
    [
        ("t.csv", "text,label\nok,a\ncaf\u00e9,a\n"),
        ("t.tsv.gz", "text\tlabel\nok\ta\ncaf\u00e9\ta\n"),
        ("t.jsonl", '{"text": "ok", "label": "a"}\n{"text": "caf\u00e9", "label": "a"}\n'),
    ],
)
def test_read_examples_not_utf8(tmp_path, name, content):
    data = content.encode("latin-1")
    path, offset = write(tmp_path / name, data), data.index(b"\xe9")  # the byte that is not UTF-8
    line, column = data[:offset].count(b"\n") + 1, offset - data.rfind(b"\n", 0, offset)
    message = rf"{name.replace('.', '[.]')}:{line}: not UTF-8 text \(column {column}: invalid continuation byte\); save the file as UTF-8"
    with pytest.raises(ValueError, match=message):
        read_examples(path)


def test_bad_csv_row_is_reported_at_the_line_where_it_starts(tmp_path):
    content = 'text,label\nok,pos\n"unclosed, pos\n' + "".join(f"row {i},neg\n" for i in range(8))
    with pytest.raises(ValueError, match=r"t\.csv:3: expected 2 fields"):
        read_examples(write(tmp_path / "t.csv", content))


def test_read_csv_with_a_byte_order_mark(tmp_path):
    path = write(tmp_path / "excel.csv", "text,label\nok,pos\n", encoding="utf-8-sig")
    assert [(e.text, e.label) for e in read_examples(path)] == [("ok", "pos")]


def test_files_as_users_have_them(tmp_path):
    """Old Mac line endings, a field longer than csv's default limit, an upper-case .GZ suffix."""
    path = write(tmp_path / "mac.csv", "text,label\rgreat,pos\rbad,neg\r")
    assert [(e.text, e.label, e.where) for e in read_examples(path)] == [("great", "pos", f"{path}:2"), ("bad", "neg", f"{path}:3")]
    long = " ".join(["word"] * 40_000)  # 200k characters: csv stops at 131,072 unless told
    assert read_examples(write(tmp_path / "long.csv", f'text,label\n"{long}",pos\n'))[0].text == long
    path = tmp_path / "UPPER.CSV.GZ"
    path.write_bytes(gzip.compress(b"text,label\nok,pos\n"))
    assert [(e.text, e.label) for e in read_examples(path)] == [("ok", "pos")]


def test_json_values_read_as_a_csv_writes_them(tmp_path):
    lines = [{"text": "a", "label": 1}, {"text": "b", "label": 2.5}, {"text": "c", "label": True}, {"text": 7, "label": "x"}]
    path = write(tmp_path / "v.jsonl", "".join(json.dumps(r) + "\n" for r in lines))
    assert [(e.text, e.label) for e in read_examples(path)] == [("a", "1"), ("b", "2.5"), ("c", "true"), ("7", "x")]
    path = write(tmp_path / "list.jsonl", json.dumps({"text": "a", "label": ["x", "y"]}) + "\n")
    with pytest.raises(ValueError, match=r"list\.jsonl:1: field 'label' is a JSON array, not a text, number or true/false"):
        read_examples(path)


def test_a_byte_that_is_not_utf8_inside_a_quoted_field_names_its_line(tmp_path):
    data = b'text,label\n"first line\ncaf\xe9 second line",pos\nok,neg\n'
    with pytest.raises(ValueError, match=r"q\.csv:3: not UTF-8 text"):
        read_examples(write(tmp_path / "q.csv", data))


def test_header_problems_are_named_at_line_1(tmp_path):
    utf16 = "text\tlabel\r\ngreat\tpos\r\n".encode("utf-16")  # Excel's "Unicode Text"
    with pytest.raises(ValueError, match=r"u\.tsv:1: not UTF-8 text"):
        read_examples(write(tmp_path / "u.tsv", utf16))
    with pytest.raises(ValueError, match=r"s\.csv:1: no field 'text', 'label' \(found: text;label\); the columns look separated by ';'"):
        read_examples(write(tmp_path / "s.csv", "text;label\ngreat;pos\n"))


def test_label_set_and_label_ids(tmp_path):
    train = read_examples(write(tmp_path / "train.csv", "text,label\na,pos\nb,neg\nc,pos\nd,mixed\n"))
    labels = label_set(train)
    assert labels == ["mixed", "neg", "pos"]
    assert label_ids(train, labels) == [2, 1, 2, 0]
    dev = read_examples(write(tmp_path / "dev.csv", "text,label\na,pos\n\nb,neutral\n"))
    with pytest.raises(ValueError, match=r"dev\.csv:4: label 'neutral' does not occur in the training data \(3 labels: mixed, neg, pos\)"):
        label_ids(dev, labels)
    many = [f"l{i:02d}" for i in range(12)]
    with pytest.raises(ValueError, match=r"12 labels: l00, l01, .*, l09 \.\.\.\)"):
        label_ids(dev, many)


# -- classification batches --------------------------------------------------------------------------
WORDS = "red green blue cyan magenta yellow black white orange purple brown grey".split()


@pytest.fixture(scope="module")
def tokenizer():
    texts = [" ".join(WORDS[(i * k) % len(WORDS)] for k in range(1, 1 + i % 7 + 1)) for i in range(200)]
    return Tokenizer.train(texts, "wordpiece", vocab_size=120, min_frequency=1)


def examples(n, pairs=False):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        text = " ".join(rng.choice(WORDS, size=1 + i % 6))
        pair = " ".join(rng.choice(WORDS, size=1 + (i * 5) % 4)) if pairs else None
        out.append(Example(text, pair, str(i), f"f:{i + 2}"))
    return out


def test_classification_batches_cover_each_example_once_per_epoch(tokenizer):
    for n, batch_size in [(25, 5), (23, 5)]:
        data = ClassificationData(examples(n), tokenizer, list(range(n)), max_len=16, batch_size=batch_size, seed=3)
        assert len(data) == n and data.steps_per_epoch == n // batch_size
        epochs = []
        for epoch in range(3):
            seen = []
            for k in range(data.steps_per_epoch):
                b = data.batch(epoch * data.steps_per_epoch + k)
                assert b["labels"].shape == (batch_size,)
                seen.extend(b["labels"].tolist())
            assert len(set(seen)) == len(seen) == data.steps_per_epoch * batch_size  # each at most once
            if n % batch_size == 0:
                assert sorted(seen) == list(range(n))  # ... and all of them
            epochs.append(seen)
        assert epochs[0] != epochs[1] != epochs[2]  # a fresh order every epoch


def test_classification_batch_is_deterministic(tokenizer):
    ex = examples(30)
    a = ClassificationData(ex, tokenizer, list(range(30)), max_len=16, batch_size=4, seed=1)
    b = ClassificationData(ex, tokenizer, list(range(30)), max_len=16, batch_size=4, seed=1)
    c = ClassificationData(ex, tokenizer, list(range(30)), max_len=16, batch_size=4, seed=2)
    for step in (0, 5, 7, 100):
        first, again, other = a.batch(step), b.batch(step), a.batch(step)
        assert first.keys() == again.keys() == other.keys()
        assert all(torch.equal(first[k], again[k]) and torch.equal(first[k], other[k]) for k in first)
    assert any(not torch.equal(a.batch(s)["labels"], c.batch(s)["labels"]) for s in range(3))
    assert not torch.equal(a.batch(0)["labels"], a.batch(1)["labels"])


def test_classification_padding_masks_and_segments(tokenizer):
    ex = examples(12, pairs=True)
    data = ClassificationData(ex, tokenizer, list(range(12)), max_len=9, batch_size=6, seed=0)
    ids, segments = tokenizer.encode_batch([e.text for e in ex], [e.pair for e in ex])
    assert any(len(x) > 9 for x in ids) and any(len(x) <= 9 for x in ids)  # some rows are truncated
    for step in range(4):
        b = data.batch(step)
        assert set(b) == {"input_ids", "attention_mask", "segment_ids", "labels"}
        B, T = b["input_ids"].shape
        assert B == 6 and T <= 9 and b["segment_ids"].shape == b["attention_mask"].shape == (B, T)
        for row, i in enumerate(b["labels"].tolist()):
            n = len(data.ids[i])
            assert n <= 9 and data.ids[i][-1] == tokenizer.sep_id  # truncated to max_len, framing kept
            assert b["input_ids"][row, :n].tolist() == data.ids[i]
            assert (b["input_ids"][row, n:] == tokenizer.pad_id).all()
            assert b["attention_mask"][row].tolist() == [1] * n + [0] * (T - n)
            assert b["segment_ids"][row].tolist() == data.segments[i] + [0] * (T - n)
            assert 1 in data.segments[i] and data.segments[i] == sorted(data.segments[i])
            if len(ids[i]) <= 9:
                assert data.ids[i] == ids[i] and data.segments[i] == segments[i]
        assert (b["attention_mask"].sum(1) == T).any()  # padded to the longest row only


def test_classification_batches_in_file_order(tokenizer):
    ex = examples(11)
    data = ClassificationData(ex, tokenizer, list(range(11)), max_len=16, batch_size=4)
    batches = list(data.batches())
    assert [len(b["labels"]) for b in batches] == [4, 4, 3]
    assert torch.cat([b["labels"] for b in batches]).tolist() == list(range(11))
    assert [len(b["input_ids"]) for b in data.batches(batch_size=5)] == [5, 5, 1]
    unlabelled = ClassificationData(ex, tokenizer, None, max_len=16, batch_size=4)
    rows = [r for b in unlabelled.batches() for r in b["input_ids"].tolist()]
    assert [[t for t in r if t != tokenizer.pad_id] for r in rows] == tokenizer.encode_batch([e.text for e in ex])[0]
    assert all("labels" not in b for b in unlabelled.batches())
    assert all((b["segment_ids"] == 0).all() for b in unlabelled.batches())


def test_by_length_covers_every_example_once_shortest_first(tokenizer):
    ex = examples(11)
    data = ClassificationData(ex, tokenizer, list(range(11)), max_len=16, batch_size=4)
    seen, lengths = [], []
    for index, batch in data.by_length():
        seen += index
        assert batch["labels"].tolist() == list(index)
        lengths += batch["attention_mask"].sum(1).tolist()
    assert sorted(seen) == list(range(11))
    assert lengths == sorted(lengths)
