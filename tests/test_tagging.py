"""Token classification: CoNLL / CoNLL-U reading and its errors, word-to-subword label alignment,
entity-level metrics (against seqeval), and `finetune.py --task ner` learning a tagging rule."""

import json
import random

import pytest
import torch

import finetune
import infer
from minilm.data.tagging import TaggingData, first_subword_labels, read_conll, tag_ids, tag_set, word_predictions
from minilm.metrics import entity_report, entity_spans, is_bio
from minilm.objectives import IGNORE_INDEX
from minilm.tokenizer import SPECIAL_TOKENS, Tokenizer

from test_scripts import TINY

CONLL = "-DOCSTART- O\n\nJohn\tB-person\nlives\tO\nin\tO\nNew\tB-location\nYork\tI-location\n\t\nHi\tO\n"
CONLLU = """# sent_id = 1
# text = Don't go.
1-2\tDon't\t_\t_\t_\t_\t_\t_\t_\t_
1\tDo\tdo\tAUX\tVBP\t_\t3\taux\t_\t_
2\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t_\t_
3\tgo\tgo\tVERB\tVB\t_\t0\troot\t_\t_
3.1\tgone\t_\t_\t_\t_\t_\t_\t_\t_
4\t.\t.\tPUNCT\t.\t_\t3\tpunct\t_\t_

"""


def test_read_conll_sentences_and_tags(tmp_path):
    path = tmp_path / "a.conll"
    path.write_text(CONLL)
    sentences = read_conll(path)
    assert [s.words for s in sentences] == [["John", "lives", "in", "New", "York"], ["Hi"]]
    assert sentences[0].tags == ["B-person", "O", "O", "B-location", "I-location"]
    assert sentences[0].where == f"{path}:3" and sentences[1].where == f"{path}:9"  # a tab-only line separates
    assert tag_set(sentences) == ["O", "B-location", "B-person", "I-location"]


def test_read_conllu_skips_ranges_and_empty_nodes(tmp_path):
    path = tmp_path / "a.conllu"
    path.write_text(CONLLU)
    (s,) = read_conll(path)
    assert s.words == ["Do", "n't", "go", "."] and s.tags == ["AUX", "PART", "VERB", "PUNCT"]
    assert read_conll(path, "xpos")[0].tags == ["VBP", "RB", "VB", "."]


@pytest.mark.parametrize("text, suffix, message", [
    ("John\n", ".conll", r":1: expected a token and a tag, found 'John'"),
    ("1\tDo\tdo\tAUX\n", ".conllu", r":1: expected 10 tab-separated CoNLL-U fields, found 4"),
    ("1\tDo\tdo\t_\tVBP\t_\t3\taux\t_\t_\n", ".conllu", r":1: field 'tag' is empty for token 'Do'"),
    ("\n\n", ".conll", r": no sentences \(the file is empty\)"),
])
def test_read_conll_errors_name_file_and_line(tmp_path, text, suffix, message):
    path = tmp_path / f"bad{suffix}"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"{path}{message}"):
        read_conll(path)


def test_read_conll_not_utf8_and_unknown_tag(tmp_path):
    path = tmp_path / "latin1.conll"
    path.write_bytes("caf\xe9\tO\n".encode("latin-1"))
    with pytest.raises(ValueError, match=str(path)):
        read_conll(path)
    dev = tmp_path / "dev.conll"
    dev.write_text("a\tO\n\nb\tO\nc\tB-x\n")
    with pytest.raises(ValueError, match=rf"{dev}:3: token 2 \('c'\) has tag 'B-x', which does not occur in the training data"):
        tag_ids(read_conll(dev), ["O"])


def test_labels_sit_on_first_subwords():
    assert first_subword_labels([None, 0, 1, 1, 1, 2, None], [5, 6, 7]) == [IGNORE_INDEX, 5, 6, IGNORE_INDEX, IGNORE_INDEX, 7, IGNORE_INDEX]
    logits = torch.zeros(7, 3)
    logits[1, 2] = logits[2, 1] = logits[3, 0] = 1  # the third subword's vote (0) is not the word's
    assert word_predictions(logits, [None, 0, 1, 1, 1, None, None], n_words=3, fallback=0) == [2, 1, 0]  # word 2 was truncated


def test_tagging_data_aligns_words_and_subwords():
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tok = Tokenizer.from_vocab([*SPECIAL_TOKENS, "new", "york", *letters, *("##" + c for c in letters)])
    from minilm.data.tagging import Sentence

    sentences = [Sentence(["new", "yorkk"], ["B-loc", "I-loc"], "x:1")]
    data = TaggingData(sentences, tok, [[1, 2]], max_len=16, batch_size=1)
    ids = data.ids[0]
    assert [tok.id_to_token(i) for i in ids] == ["[CLS]", "new", "york", "##k", "[SEP]"]
    batch = data.batch(0)
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 1, 2, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1]]


# -- metrics ---------------------------------------------------------------------------------------
def test_entity_spans_read_bio_as_conlleval():
    assert entity_spans(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 2), ("LOC", 3, 4)]
    assert entity_spans(["I-PER", "I-PER", "B-PER", "I-LOC"]) == [("PER", 0, 2), ("PER", 2, 3), ("LOC", 3, 4)]  # I- after O or another type starts one
    assert entity_spans(["O", "O"]) == []
    assert is_bio(["O", "B-x", "I-y"]) and not is_bio(["NOUN", "VERB"])


def test_entity_report_matches_seqeval():
    seqeval = pytest.importorskip("seqeval.metrics")
    rng = random.Random(0)
    tags = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
    gold = [[rng.choice(tags) for _ in range(rng.randint(1, 12))] for _ in range(300)]
    pred = [[t if rng.random() < 0.7 else rng.choice(tags) for t in s] for s in gold]
    ours = entity_report(gold, pred)
    assert ours["precision"] == pytest.approx(seqeval.precision_score(gold, pred))
    assert ours["recall"] == pytest.approx(seqeval.recall_score(gold, pred))
    assert ours["f1"] == pytest.approx(seqeval.f1_score(gold, pred))
    per_type = seqeval.classification_report(gold, pred, output_dict=True)
    for kind, f1 in ours["per_type_f1"].items():
        assert f1 == pytest.approx(per_type[kind]["f1-score"])


# -- finetune.py --task ner ------------------------------------------------------------------------
COLOURS, ANIMALS = ["red", "blue", "green", "pink"], ["dog", "cat", "cow", "fox", "owl"]


def write_tagged(path, n, seed):
    """Sentences of filler words, colours and animals; an animal is an entity (B-animal), and a
    colour before an animal is part of it ("red dog": B-animal I-animal)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words, tags = [], []
        for _ in range(rng.randint(3, 8)):
            r = rng.random()
            if r < 0.25:
                words += [rng.choice(COLOURS), rng.choice(ANIMALS)]
                tags += ["B-animal", "I-animal"]
            elif r < 0.45:
                words.append(rng.choice(ANIMALS))
                tags.append("B-animal")
            else:
                words.append(rng.choice(["the", "a", "saw", "here", "big"]))
                tags.append("O")
        out.append("\n".join(f"{w}\t{t}" for w, t in zip(words, tags)))
    path.write_text("\n\n".join(out) + "\n")
    return path


def test_finetune_ner_learns_entities(tmp_path, capsys):
    tr, dv = write_tagged(tmp_path / "train.conll", 400, 1), write_tagged(tmp_path / "dev.conll", 80, 2)
    result = finetune.main(["--task", "ner", "--init", "scratch", "--train", str(tr), "--dev", str(dv), "--test", str(dv),
                            "--out", str(tmp_path / "o"), "--epochs", "6", "--lr", "2e-3", "--batch-size", "16", "--vocab-size", "200", *TINY])
    assert result["dev"]["f1"] >= 0.9 and result["dev"]["entities"] > 100
    saved = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert saved["labels"] == ["O", "B-animal", "I-animal"] and saved["test"]["f1"] == result["test"]["f1"]
    assert "dev: precision" in capsys.readouterr().out
    infer.main(["predict", "--ckpt", str(tmp_path / "o"), "--json", "the red dog saw a cat here", "big owl"])
    first, second = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert first["words"] == "the red dog saw a cat here".split() and len(first["tags"]) == 7
    assert [(e["type"], e["text"]) for e in first["entities"]] == [("animal", "red dog"), ("animal", "cat")]
    assert second["entities"] == [{"type": "animal", "start": 1, "end": 2, "text": "owl"}]


def test_finetune_ner_on_ud_ewt_upos_scores_tag_accuracy(tmp_path, shared_data):
    ud = shared_data / "ud_english_ewt"
    result = finetune.main(["--task", "ner", "--init", "scratch", "--train", str(ud / "en_ewt-ud-dev.conllu"), "--dev", str(ud / "en_ewt-ud-test.conllu"),
                            "--out", str(tmp_path), "--max-steps", "200", "--lr", "3e-3", "--batch-size", "32", *TINY, "--vocab-size", "2000"])
    dev = result["dev"]
    assert dev["f1"] == pytest.approx(dev["accuracy"])  # not BIO: F1 is the per-word micro F1
    assert dev["accuracy"] > 0.5  # the majority tag (NOUN) is 16%
    assert len(result["labels"]) == 17
