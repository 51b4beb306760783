"""Task files as people really have them are read, not refused: CSV saved by spreadsheet programs
(a UTF-8 byte-order mark, CRLF line ends, quoted fields holding commas, quotes and line breaks), TSV
ending in an empty line, JSONL with blank lines, labels with spaces around them, gzipped copies."""

import gzip

import pytest

from minilm.data.tasks import label_set, read_examples

SPREADSHEET_CSV = (
    "\ufefftext,label\r\n"
    '"Great film, would watch again",pos\r\n'
    '"She said ""no"" twice",neg\r\n'
    '"two lines\r\nin one cell",pos\r\n'
    "plain text, no quotes,neg\r\n"  # four fields: an error, tested below
)


def write(path, text: str):
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(text.encode("utf-8"))
    else:
        path.write_bytes(text.encode("utf-8"))
    return path


@pytest.mark.parametrize("name", ["excel.csv", "excel.csv.gz"])
def test_spreadsheet_csv(tmp_path, name):
    good = SPREADSHEET_CSV.rsplit("plain", 1)[0]
    examples = read_examples(write(tmp_path / name, good))
    assert [e.text for e in examples] == ["Great film, would watch again", 'She said "no" twice', "two lines\nin one cell"]
    assert [e.label for e in examples] == ["pos", "neg", "pos"]
    assert [e.where.rsplit(":", 1)[1] for e in examples] == ["2", "3", "4"]  # the line each record starts on


def test_spreadsheet_csv_names_the_line_after_a_multiline_cell(tmp_path):
    path = write(tmp_path / "excel.csv", SPREADSHEET_CSV)
    with pytest.raises(ValueError, match=r"excel\.csv:6: expected 2 fields \(text, label\), found 3"):
        read_examples(path)


def test_no_header_field_keeps_its_byte_order_mark(tmp_path):
    path = write(tmp_path / "bom.tsv", "\ufefftext\tlabel\r\nhello\tx\r\n")
    assert read_examples(path)[0].text == "hello"


def test_tsv_with_trailing_empty_lines(tmp_path):
    path = write(tmp_path / "t.tsv", "text\tlabel\nfine day\t1\nbad day\t0\n\n\n")
    assert [(e.text, e.label) for e in read_examples(path)] == [("fine day", "1"), ("bad day", "0")]


def test_tsv_with_crlf_and_bare_quotes(tmp_path):
    path = write(tmp_path / "t.tsv", 'text\tlabel\r\nit \'s a "great" film\t1\r\n')
    assert read_examples(path)[0].text == 'it \'s a "great" film'


def test_jsonl_with_blank_lines_and_crlf(tmp_path):
    path = write(tmp_path / "t.jsonl", '{"text": "a", "label": "x"}\r\n\r\n   \n{"text": "b", "label": "y"}\r\n')
    examples = read_examples(path)
    assert [(e.text, e.label) for e in examples] == [("a", "x"), ("b", "y")]
    assert examples[1].where.endswith(":4")


def test_jsonl_numbers_and_booleans_as_labels(tmp_path):
    path = write(tmp_path / "t.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": 0}\n')
    assert [e.label for e in read_examples(path)] == ["1", "0"]


def test_labels_with_surrounding_spaces_are_one_label(tmp_path):
    path = write(tmp_path / "t.csv", "text,label\nfirst, pos\nsecond,pos \nthird,  neg\n")
    examples = read_examples(path)
    assert [e.label for e in examples] == ["pos", "pos", "neg"]
    assert label_set(examples) == ["neg", "pos"]


def test_header_names_with_spaces_and_case_as_written(tmp_path):
    path = write(tmp_path / "t.csv", " text , label \nhello,pos\n")
    assert read_examples(path)[0].text == "hello"


def test_a_header_naming_a_column_twice_is_an_error(tmp_path):
    path = write(tmp_path / "t.csv", "text,label,text\nhello,pos,again\n")
    with pytest.raises(ValueError, match=r"t\.csv:1: the header names 'text' more than once"):
        read_examples(path)
