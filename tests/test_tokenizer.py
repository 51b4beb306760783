"""Tokenizers: special-token ids, BERT framing, byte-level round trips, save/load, truncation, errors."""

import random
import unicodedata

import pytest

from minilm.tokenizer import BOS, CLS, EOS, MASK, PAD, SENTINELS, SEP, SPECIAL_TOKENS, UNK, Tokenizer

WORDS = "alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega river stone cloud".split()


def make_texts(n=300, seed=0):
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(n)]
    return texts + ["Punctuation, too: yes! (brackets) and 'quotes'.", "Ünïcödé wörds, naïve café 日本語 🎉"] * 3


@pytest.fixture(scope="module")
def wordpiece():
    return Tokenizer.train(make_texts(), "wordpiece", vocab_size=200)


@pytest.fixture(scope="module")
def bpe():
    return Tokenizer.train(make_texts(), "bpe", vocab_size=400)


@pytest.fixture(params=["wordpiece", "bpe"])
def tokenizer(request, wordpiece, bpe):
    return {"wordpiece": wordpiece, "bpe": bpe}[request.param]


def test_special_tokens_take_the_first_ids_in_order(tokenizer):
    for i, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.token_to_id(token) == i, token
        assert tokenizer.id_to_token(i) == token
    assert SPECIAL_TOKENS[:7] == [PAD, UNK, CLS, SEP, MASK, BOS, EOS]
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id) == (0, 1, 2, 3)
    assert (tokenizer.mask_id, tokenizer.bos_id, tokenizer.eos_id) == (4, 5, 6)
    assert tokenizer.sentinel_ids == list(range(7, 7 + len(SENTINELS))) and len(SENTINELS) == 32
    assert tokenizer.special_ids == set(range(len(SPECIAL_TOKENS)))
    assert len(SPECIAL_TOKENS) < tokenizer.vocab_size <= 400  # learned something beyond the specials


def test_unknown_kind_is_an_error():
    with pytest.raises(ValueError, match=r"unknown tokenizer kind 'sentencepiece': expected one of wordpiece, bpe"):
        Tokenizer.train(make_texts(10), "sentencepiece")


def test_wordpiece_frames_single_texts_and_pairs(wordpiece):
    tk = wordpiece
    a, b = "alpha beta river", "stone cloud omega sigma"
    body_a, body_b = tk.encode(a, add_special=False), tk.encode(b, add_special=False)
    assert body_a and body_b and not (set(body_a) | set(body_b)) & tk.special_ids
    assert tk.encode(a) == [tk.cls_id, *body_a, tk.sep_id]
    assert tk.encode(a, b) == [tk.cls_id, *body_a, tk.sep_id, *body_b, tk.sep_id]

    ids, segments = tk.encode_batch([a, b], [b, a])
    assert ids[0] == [tk.cls_id, *body_a, tk.sep_id, *body_b, tk.sep_id]
    assert segments[0] == [0] * (len(body_a) + 2) + [1] * (len(body_b) + 1)
    assert ids[1] == [tk.cls_id, *body_b, tk.sep_id, *body_a, tk.sep_id]
    assert segments[1] == [0] * (len(body_b) + 2) + [1] * (len(body_a) + 1)
    ids, segments = tk.encode_batch([a])
    assert ids == [tk.encode(a)] and segments == [[0] * len(ids[0])]


def test_wordpiece_lowercases_splits_and_decodes(wordpiece):
    tk = wordpiece
    assert tk.encode("ALPHA Beta") == tk.encode("alpha beta")
    assert tk.decode(tk.encode("Alpha, beta!")) == "alpha, beta!"  # specials skipped, '##' pieces joined
    assert tk.unk_id in tk.encode("ж", add_special=False)  # never seen: unknown for WordPiece


def test_bpe_adds_no_framing_to_single_texts(bpe):
    body = bpe.encode("alpha beta", add_special=False)
    assert bpe.encode("alpha beta") == body
    ids, segments = bpe.encode_batch(["alpha beta"], ["gamma"])
    assert ids[0] == [*body, bpe.sep_id, *bpe.encode("gamma", add_special=False)]
    assert segments[0] == [0] * (len(body) + 1) + [1] * (len(ids[0]) - len(body) - 1)


def random_unicode(rng, n):
    """Text of code points from every plane (no surrogates), whitespace and combining marks."""
    pools = [
        lambda: rng.choice(" \t\n\r  "),
        lambda: chr(rng.randint(0x20, 0x7E)),
        lambda: chr(rng.randint(0xA0, 0x2FF)),
        lambda: chr(rng.randint(0x300, 0x36F)),  # combining marks
        lambda: chr(rng.randint(0x4E00, 0x9FFF)),  # CJK
        lambda: chr(rng.randint(0xAC00, 0xD7A3)),  # Hangul syllables
        lambda: chr(rng.randint(0x1F300, 0x1FAFF)),  # emoji
        lambda: chr(rng.randint(0x10000, 0x10FFFF)),  # astral, mostly unassigned
        lambda: chr(rng.randint(0, 0x1F)),  # control characters
    ]
    return "".join(rng.choice(pools)() for _ in range(n))


def test_bpe_round_trips_arbitrary_unicode(bpe):
    rng = random.Random(1)
    texts = [random_unicode(rng, rng.randint(1, 60)) for _ in range(200)]
    texts += ["", " leading and trailing spaces  ", "a\r\nb\x00c", "tabs\t\tand\n\nnewlines\n"]
    for text in texts:
        text = unicodedata.normalize("NFC", text)
        ids = bpe.encode(text)
        assert bpe.unk_id not in ids  # byte level: nothing is unknown
        assert bpe.decode(ids) == text, repr(text)


def test_bpe_round_trips_text_that_is_not_nfc(bpe):
    for text in ["cafe\u0301", "\u1100\u1161", "A\u030a ngstro\u0308m"]:
        assert bpe.decode(bpe.encode(text)) == text


def test_bpe_keeps_special_token_text_when_asked(bpe):
    ids = bpe.encode("[EOS] hi")
    assert ids[0] == bpe.eos_id
    assert bpe.decode(ids, skip_special=False) == "[EOS] hi"
    assert bpe.decode(ids) == " hi"


def test_save_load_round_trip(tokenizer, tmp_path):
    tokenizer.save(tmp_path / "tokenizer.json")
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temporary file
    for loaded in (Tokenizer.load(tmp_path / "tokenizer.json"), Tokenizer.load(tmp_path)):
        assert loaded.vocab_size == tokenizer.vocab_size
        assert loaded.special_ids == tokenizer.special_ids and loaded.sentinel_ids == tokenizer.sentinel_ids
        for name in ("pad", "unk", "cls", "sep", "mask", "bos", "eos"):
            assert getattr(loaded, f"{name}_id") == getattr(tokenizer, f"{name}_id")
        texts = make_texts(20, seed=5) + ["Ünïcödé wörds, naïve café", "never seen: ж ψ 🙂"]
        assert loaded.encode_batch(texts) == tokenizer.encode_batch(texts)
        assert loaded.encode_batch(texts[:10], texts[10:20]) == tokenizer.encode_batch(texts[:10], texts[10:20])
        assert loaded.encode_batch(texts, max_len=6) == tokenizer.encode_batch(texts, max_len=6)
        assert [loaded.decode(x) for x in loaded.encode_batch(texts)[0]] == [
            tokenizer.decode(x) for x in tokenizer.encode_batch(texts)[0]
        ]


def test_encode_batch_truncates_and_the_limit_does_not_stick(wordpiece):
    tk = wordpiece
    long_a = " ".join(WORDS * 2)
    long_b = " ".join(reversed(WORDS * 2))
    full = tk.encode(long_a)
    assert len(full) > 20

    ids, segments = tk.encode_batch([long_a, "alpha"], max_len=8)
    assert ids[0] == full[:7] + [tk.sep_id]  # the framing survives truncation
    assert ids[1] == tk.encode("alpha")  # short texts are untouched
    assert [len(s) for s in segments] == [len(x) for x in ids]

    ids, segments = tk.encode_batch([long_a], [long_b], max_len=12)
    assert len(ids[0]) == 12 and ids[0][0] == tk.cls_id and ids[0][-1] == tk.sep_id
    assert ids[0].count(tk.sep_id) == 2 and segments[0].count(0) >= 3 and segments[0].count(1) >= 2
    assert segments[0] == sorted(segments[0]) and len(segments[0]) == 12

    # a later call without max_len (and plain encode) see the whole text again
    assert tk.encode_batch([long_a])[0][0] == full
    assert tk.encode(long_a) == full
    assert tk.backend.truncation is None
    assert len(tk.encode_batch([long_a], [long_b])[0][0]) == len(tk.encode(long_a, long_b)) > 40


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing\.json: no tokenizer file"):
        Tokenizer.load(tmp_path / "nothing.json")
    with pytest.raises(FileNotFoundError, match=r"tokenizer\.json: no tokenizer file"):
        Tokenizer.load(tmp_path)  # a directory without tokenizer.json


@pytest.mark.parametrize("content", ['{"version": "1.0", "model": ', "{}", "not json at all"])
def test_load_broken_json(tmp_path, content):
    path = tmp_path / "tokenizer.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=r"tokenizer\.json: not a valid tokenizer\.json \(.+\)"):
        Tokenizer.load(path)
