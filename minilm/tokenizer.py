"""Tokenizers: WordPiece (BERT-style) and byte-level BPE (GPT-style), trained with `tokenizers`.

Special tokens are defined here and nowhere else. A trained tokenizer is saved as
`tokenizer.json` beside every checkpoint; `Tokenizer.load` reads it back. A `tokenizer.json` made
elsewhere (a Hugging Face checkpoint's) loads the same way: its special tokens are found through
`SPECIAL_ALIASES`, the other vocabularies' spellings of minilm's special tokens.

    WordPiece  (Wu et al. 2016; BERT):  lower-cased, split on whitespace and punctuation, words
               broken into '##'-continued pieces; inputs framed as [CLS] A [SEP] (B [SEP]).
    Byte BPE   (Sennrich et al. 2016; GPT-2): merges over UTF-8 bytes, so no text is ever
               unknown; no framing (documents are joined with [EOS] by the data pipeline).
    Character  one token per character (char-rnn, nanoGPT's shakespeare_char), newline included;
               characters never seen become [UNK]; no framing.
"""

from __future__ import annotations

import os
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers

from minilm.files import atomic_write_text
from minilm.pretrained import shipped

PAD, UNK, CLS, SEP, MASK, BOS, EOS = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[BOS]", "[EOS]"
N_SENTINELS = 32  # T5 span-corruption sentinels [X0] .. [X31]
SENTINELS = [f"[X{i}]" for i in range(N_SENTINELS)]
SPECIAL_TOKENS = [PAD, UNK, CLS, SEP, MASK, BOS, EOS, *SENTINELS]  # ids 0, 1, 2, ... in a trained vocabulary
KINDS = ("wordpiece", "bpe", "char")

# The id of each special role is the first of these tokens that the vocabulary holds: minilm's own
# spelling, then those of vocabularies made elsewhere (BERT's are minilm's; GPT-2 has only
# <|endoftext|>, which begins and ends its documents; BART and RoBERTa use <s> </s> <pad> <unk> <mask>).
SPECIAL_ALIASES = {
    "pad": (PAD, "<pad>"),
    "unk": (UNK, "<unk>"),
    "cls": (CLS, "<s>"),
    "sep": (SEP, "</s>"),
    "mask": (MASK, "<mask>"),
    "bos": (BOS, "<s>", "<|endoftext|>"),
    "eos": (EOS, "</s>", "<|endoftext|>"),
}

os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")


# Readers of checkpoint directories that hold no tokenizer.json, read(directory) -> Tokenizer or
# None: minilm/interop registers one for Hugging Face's WordPiece vocab.txt.
DIRECTORY_READERS: list = []


class Tokenizer:
    """A `tokenizers.Tokenizer` with the special-token ids as attributes (`pad_id`, `cls_id`, ...;
    None where the vocabulary has no such token).

    minilm pads and truncates in its batch builders, so padding or truncation settings that a
    tokenizer.json made elsewhere carries are switched off here.
    """

    def __init__(self, backend: HFTokenizer):
        self.backend = backend
        backend.no_padding()
        backend.no_truncation()
        for role, tokens in SPECIAL_ALIASES.items():
            ids = [i for i in (backend.token_to_id(t) for t in tokens) if i is not None]
            setattr(self, f"{role}_id", ids[0] if ids else None)
        self.sentinel_ids = [i for i in (backend.token_to_id(t) for t in SENTINELS) if i is not None]
        roles = {getattr(self, f"{role}_id") for role in SPECIAL_ALIASES}
        self.special_ids = {i for i in roles if i is not None} | set(self.sentinel_ids)

    @property
    def fill_id(self) -> int:
        """The id that pads a batch: [PAD]; else EOS, as `transformers` generate() pads when a tokenizer
        has none (GPT-2's has only <|endoftext|>); else 0. Masks hide padded positions, so the id
        changes no output; it only has to be a valid row of the embedding."""
        for i in (self.pad_id, self.eos_id):
            if i is not None:
                return i
        return 0

    def require(self, roles, purpose: str) -> None:
        """Refuse, naming them, the special roles ("bos", "eos", "mask", ...) that `purpose` needs
        and this vocabulary lacks (a tokenizer made elsewhere may lack any of them)."""
        missing = [role for role in roles if getattr(self, f"{role}_id") is None]
        if missing:
            names = " and ".join(f"{role.upper()} ({' or '.join(SPECIAL_ALIASES[role])})" for role in missing)
            raise ValueError(f"{purpose} needs the tokenizer's {names} token{'s' * (len(missing) > 1)}, which it does not have")

    def special_token(self, role: str) -> str | None:
        """The token string of a special role ("pad", "cls", "eos", ...), or None."""
        i = getattr(self, f"{role}_id")
        return None if i is None else self.backend.id_to_token(i)

    # -- building ----------------------------------------------------------------------------
    @classmethod
    def train(cls, texts, kind: str = "wordpiece", vocab_size: int = 8192, min_frequency: int = 2) -> "Tokenizer":
        """Learn a vocabulary of about `vocab_size` entries from an iterable of strings (the trainers
        always keep the whole initial alphabet and the special tokens, so a tiny request yields more)."""
        if kind == "char":
            alphabet = {"\n"}
            for text in texts:
                alphabet.update(text)
            return cls.from_chars(alphabet)
        if kind == "wordpiece":
            tk = HFTokenizer(models.WordPiece(unk_token=UNK))
            tk.normalizer = normalizers.BertNormalizer(lowercase=True)
            tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
            tk.decoder = decoders.WordPiece()
            trainer = trainers.WordPieceTrainer(
                vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS, show_progress=False
            )
        elif kind == "bpe":
            tk = HFTokenizer(models.BPE())
            tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            tk.decoder = decoders.ByteLevel()
            trainer = trainers.BpeTrainer(
                vocab_size=vocab_size,
                min_frequency=min_frequency,
                special_tokens=SPECIAL_TOKENS,
                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                show_progress=False,
            )
        else:
            raise ValueError(f"unknown tokenizer kind {kind!r}: expected one of {', '.join(KINDS)}")
        tk.train_from_iterator(texts, trainer=trainer)
        cls._set_framing(tk, kind)
        return cls(tk)

    @classmethod
    def from_chars(cls, alphabet) -> "Tokenizer":
        """A character-level tokenizer: the special tokens, then the characters in sorted order."""
        chars = sorted(set(alphabet) - set(SPECIAL_TOKENS))
        vocab = {t: i for i, t in enumerate([*SPECIAL_TOKENS, *chars])}
        tk = HFTokenizer(models.WordLevel(vocab, unk_token=UNK))
        tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every character, newline too
        tk.decoder = decoders.Fuse()  # join the characters back without spaces
        tk.add_special_tokens(SPECIAL_TOKENS)
        cls._set_framing(tk, "char")
        return cls(tk)

    @classmethod
    def from_vocab(cls, vocab: list[str], lowercase: bool = True) -> "Tokenizer":
        """A WordPiece tokenizer from a list of pieces (a BERT `vocab.txt`, one piece a line, the
        line number being the id), with BERT's normalisation and [CLS] A [SEP] (B [SEP]) framing."""
        missing = [t for t in (UNK, CLS, SEP) if t not in vocab]
        if missing:  # [UNK] stands for unknown pieces; [CLS] A [SEP] (B [SEP]) frames every input
            raise ValueError(f"a WordPiece vocabulary needs the {', '.join(missing)} token{'s' * (len(missing) > 1)}")
        tk = HFTokenizer(models.WordPiece({piece: i for i, piece in enumerate(vocab)}, unk_token=UNK))
        tk.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
        tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tk.decoder = decoders.WordPiece()
        tk.add_special_tokens([t for t in SPECIAL_TOKENS if t in vocab])
        cls._set_framing(tk, "wordpiece")
        return cls(tk)

    @staticmethod
    def _set_framing(tk: HFTokenizer, kind: str):
        cls_id, sep_id = tk.token_to_id(CLS), tk.token_to_id(SEP)
        if kind == "wordpiece":
            single, pair = f"{CLS} $A {SEP}", f"{CLS} $A:0 {SEP}:0 $B:1 {SEP}:1"
        else:
            single, pair = "$A", f"$A:0 {SEP}:0 $B:1"
        tk.post_processor = processors.TemplateProcessing(
            single=single, pair=pair, special_tokens=[(CLS, cls_id), (SEP, sep_id)]
        )

    @classmethod
    def load(cls, path) -> "Tokenizer":
        """From a `tokenizer.json` file or a checkpoint directory holding one (or, for a Hugging
        Face checkpoint with no tokenizer.json, its WordPiece `vocab.txt`: see minilm/interop), or
        the name of a shipped checkpoint (minilm/pretrained)."""
        path = shipped(path) or Path(path)
        if path.is_dir():
            if not (path / "tokenizer.json").is_file():
                for read in DIRECTORY_READERS:  # a Hugging Face checkpoint's vocab.txt (minilm/interop)
                    found = read(path)
                    if found is not None:
                        return found
            path = path / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no tokenizer file")
        try:
            return cls(HFTokenizer.from_file(str(path)))
        except Exception as e:  # the Rust parser raises plain Exceptions
            raise ValueError(f"{path}: not a valid tokenizer.json ({e})") from None

    def to_json(self) -> str:
        """The whole tokenizer as the text of a tokenizer.json file."""
        return self.backend.to_str()

    @classmethod
    def from_json(cls, text: str) -> "Tokenizer":
        return cls(HFTokenizer.from_str(text))

    def save(self, path) -> None:
        atomic_write_text(path, self.backend.to_str(pretty=True))

    # -- using ---------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    def encode(self, text: str, pair: str | None = None, add_special: bool = True) -> list[int]:
        return self.backend.encode(text, pair, add_special_tokens=add_special).ids

    def encode_batch(self, texts, pairs=None, max_len: int | None = None, add_special: bool = True):
        """Token ids and segment ids of many texts (or text pairs), truncated to max_len.

        Returns two lists of lists: ids and segment ids (0 for text A, 1 for text B)."""
        if max_len is not None:
            self.backend.enable_truncation(max_len)
        try:
            inputs = list(texts) if pairs is None else list(zip(texts, pairs))
            encodings = self.backend.encode_batch(inputs, add_special_tokens=add_special)
        finally:
            self.backend.no_truncation()
        return [e.ids for e in encodings], [e.type_ids for e in encodings]

    def encode_words(self, sentences, max_len: int | None = None):
        """Subword ids of pre-split sentences (lists of words), truncated to max_len, with the word
        each subword came from: two lists of lists, ids and word indices (None for special tokens)."""
        if max_len is not None:
            self.backend.enable_truncation(max_len)
        try:
            encodings = self.backend.encode_batch([list(words) for words in sentences], is_pretokenized=True)
        finally:
            self.backend.no_truncation()
        return [e.ids for e in encodings], [e.word_ids for e in encodings]

    def decode(self, ids, skip_special: bool = True) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special)

    def token_to_id(self, token: str):
        return self.backend.token_to_id(token)

    def id_to_token(self, i: int):
        return self.backend.id_to_token(i)
