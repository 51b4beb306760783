"""What a trained checkpoint answers: generated text, labels, entity spans, values, masked words,
sentence embeddings. Each function takes texts and returns JSON-ready dicts; `infer.py` prints
them and `minilm/inference/serve.py` sends them over HTTP.

Notation: B batch, T time, C channels, V vocabulary, L labels.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field

import torch

from minilm.checkpoint import from_pretrained, resolve_checkpoint
from minilm.data.pretrain import pad
from minilm.data.tagging import Sentence, TaggingData
from minilm.data.tasks import ClassificationData, Example
from minilm.inference.beam import beam_search
from minilm.inference.generate import generate, pad_prompts, until_eos
from minilm.inference.task_outputs import predict, predict_tags
from minilm.metrics import entity_spans, is_bio
from minilm.model.heads import pool
from minilm.tokenizer import Tokenizer

GENERATIVE_HEADS = ("lm",)
PREDICT_HEADS = ("cls", "regression", "token")
MLM_HEADS = ("mlm", "mlm+nsp")


def load(ckpt, device: str = "cpu", quantize: str | None = None, compile: bool = False):
    """(model, tokenizer) of a checkpoint directory; `quantize="int8"` for dynamic int8 on the CPU;
    `compile` compiles each block with torch.compile (kernels/compile.py)."""
    model = from_pretrained(ckpt).to(device)
    tokenizer = Tokenizer.load(resolve_checkpoint(ckpt))
    if tokenizer.vocab_size > model.config.vocab_size:  # text that meets the extra tokens would fail inside the model
        print(f"warning: {resolve_checkpoint(ckpt)}: tokenizer.json has {tokenizer.vocab_size} tokens, more than the "
              f"{model.config.vocab_size} rows of the model's embedding; is the tokenizer this model's?", file=sys.stderr)
    if quantize:
        from minilm.inference.quantize import quantize as to_int8

        model = to_int8(model, quantize)
    if compile:
        from kernels import compile_blocks

        compile_blocks(model)
    return model, tokenizer


def kind(model) -> str:
    """What a model can do: "generate", "predict", "fill-mask" or "embed" (an encoder with no head)."""
    head = model.config.head
    if head in GENERATIVE_HEADS and model.config.arch != "encoder":
        return "generate"
    if head in PREDICT_HEADS or model.config.prompt:  # a prompt-based classifier: its MLM head reads the template's mask
        return "predict"
    if head in MLM_HEADS:
        return "fill-mask"
    return "embed"


# -- generation --------------------------------------------------------------------------------------------
@dataclass
class GenerationSettings:
    """The decoding knobs of `infer.py generate` and of the server's /generate."""

    max_new_tokens: int = 50
    greedy: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0
    num_beams: int = 1
    length_penalty: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None

    def check(self):
        for name in ("temperature", "top_p", "repetition_penalty", "length_penalty"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}")
        if self.seed is not None and not -(2**63) <= self.seed < 2**64:
            raise ValueError(f"seed must lie in [-2**63, 2**64), got {self.seed}")
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {self.num_beams}")
        return self


def cut_at_stop(text: str, stops) -> tuple[str, bool]:
    """The text up to the first stop string, and whether one was found."""
    hits = [text.index(s) for s in stops if s and s in text]
    return (text[: min(hits)], True) if hits else (text, False)


def safe_to_show(text: str, stops) -> str:
    """`text` less any ending that could be the start of a stop string: streaming holds that back
    until the next tokens show whether the stop string completes (then it is cut) or not."""
    held = max((k for s in stops for k in range(1, min(len(s), len(text) + 1)) if text.endswith(s[:k])), default=0)
    return text[: len(text) - held]


def tokens_until_stop(tokens: list[int], decode, stops) -> list[int]:
    """The tokens up to and including the one that completed the first stop string (all of them
    when none did), so that they agree with the text cut at that stop string."""
    if not stops or not cut_at_stop(decode(tokens), stops)[1]:
        return tokens
    n = next(n for n in range(1, len(tokens) + 1) if cut_at_stop(decode(tokens[:n]), stops)[1])
    return tokens[:n]


def prompt_ids(model, tokenizer, prompts: list[str]) -> list[list[int]]:
    """Token ids of each prompt as generation takes them (an encoder-decoder's source ends with
    EOS, where the tokenizer has one); a decoder's prompt with no token at all is refused."""
    eos = [tokenizer.eos_id] if model.config.arch == "encoder-decoder" and tokenizer.eos_id is not None else []
    ids = [tokenizer.encode(p, add_special=False) + eos for p in prompts]
    empty = [i + 1 for i, row in enumerate(ids) if not row]
    if empty:
        raise ValueError(f"prompt {empty[0]} of {len(prompts)} is empty: a decoder needs at least one token to continue")
    return ids


def generate_texts(model, tokenizer, prompts: list[str], settings: GenerationSettings, on_text=None) -> list[dict]:
    """{"text", "tokens"} per prompt: the continuation (decoder) or the output (encoder-decoder).

    `on_text(piece)` receives the first prompt's text as it grows (streaming; one prompt, no beams).
    Decoding stops at EOS, at max_new_tokens, or once every row has produced a stop string. A
    tokenizer with no pad token pads with EOS (`Tokenizer.fill_id`), as transformers does.
    """
    settings.check()
    tk = tokenizer
    encoder_decoder = model.config.arch == "encoder-decoder"
    start = model.config.decoder_start(tk) if encoder_decoder else None
    ids = prompt_ids(model, tk, prompts)
    input_ids, mask = pad_prompts(ids, tk.fill_id, encoder_decoder)
    device = next(model.parameters()).device
    input_ids, mask = input_ids.to(device), mask.to(device)
    common = dict(repetition_penalty=settings.repetition_penalty, eos_id=tk.eos_id, pad_id=tk.fill_id, decoder_start_id=start)
    shown = [""]  # the streamed text so far
    if settings.num_beams > 1:
        new = beam_search(model, input_ids, mask, settings.max_new_tokens, settings.num_beams, settings.length_penalty, **common)
    else:
        produced = [[] for _ in prompts]

        def on_step(token):  # (B,) -> rows that produced a stop string
            stopped = torch.zeros(len(prompts), dtype=torch.bool)
            for i, t in enumerate(token.tolist()):
                produced[i].append(t)
                if settings.stop or (i == 0 and on_text is not None):
                    text, hit = cut_at_stop(tk.decode(until_eos(produced[i], tk.eos_id)), settings.stop)
                    stopped[i] = hit
                    text = text.rstrip("\ufffd")  # an incomplete UTF-8 sequence: wait for its remaining bytes
                    if not hit:
                        text = safe_to_show(text, settings.stop)  # perhaps the start of a stop string: wait
                    if i == 0 and on_text is not None and len(text) > len(shown[0]) and text.startswith(shown[0]):
                        on_text(text[len(shown[0]) :])
                        shown[0] = text
            return stopped.to(token.device)

        generator = torch.Generator(device=device).manual_seed(settings.seed) if settings.seed is not None else None
        needs_steps = bool(settings.stop) or on_text is not None
        new = generate(model, input_ids, mask, settings.max_new_tokens, greedy=settings.greedy, temperature=settings.temperature,
                       top_k=settings.top_k, top_p=settings.top_p, generator=generator,
                       on_step=on_step if needs_steps else None, **common)
    results = []
    for row in new.tolist():
        tokens = tokens_until_stop(until_eos(row, tk.eos_id), tk.decode, settings.stop)
        text, _ = cut_at_stop(tk.decode(tokens), settings.stop)
        results.append({"text": text, "tokens": tokens})
    if on_text is not None and settings.num_beams == 1 and results[0]["text"].startswith(shown[0]):
        rest = results[0]["text"][len(shown[0]) :]  # what was held back at the end, if anything
        if rest:
            on_text(rest)
    return results


# -- prediction --------------------------------------------------------------------------------------------
WORD = re.compile(r"\w+|[^\w\s]")  # words and single punctuation marks, as the tagging corpora split them


def windows(word_index: list, n_words: int, max_len: int) -> list[tuple[int, int]]:
    """Consecutive word ranges [a, b) of one sentence whose subwords, with the special tokens,
    fit in max_len positions; word_index maps the untruncated subwords to their words (None:
    special token). Every range holds at least one word (a longer word is cut by the model's
    truncation, as before)."""
    budget = max_len - sum(w is None for w in word_index)
    sizes = [0] * n_words
    for w in word_index:
        if w is not None:
            sizes[w] += 1
    out, start, used = [], 0, 0
    for w, size in enumerate(sizes):
        if w > start and used + size > budget:
            out.append((start, w))
            start, used = w, 0
        used += size
    return out + [(start, n_words)] if n_words else []


def tag_words(model, tokenizer, word_lists: list[list[str]], batch_size: int, device) -> list[list[int]]:
    """Tag ids for every word of every word list. A list longer than the model's positions is
    tagged in consecutive windows that fit (a window sees no context from the others); all the
    windows of all the lists go through the model together."""
    max_len = model.config.max_seq_len
    _, index = tokenizer.encode_words(word_lists)  # untruncated: where the windows must end
    pieces = [(i, a, b) for i, (w, wi) in enumerate(zip(word_lists, index)) for a, b in windows(wi, len(w), max_len)]
    sentences = [Sentence(word_lists[i][a:b], [], f"input {i + 1}") for i, a, b in pieces]
    data = TaggingData(sentences, tokenizer, [[0] * len(s.words) for s in sentences], max_len, batch_size)
    out = [[] for _ in word_lists]
    for (i, _, _), tags in zip(pieces, predict_tags(model, data, device)):
        out[i] += tags
    return out


def needs_pair(model) -> bool:
    """Whether the model's head reads text pairs only: a bi-encoder's cls / regression head compares two texts."""
    return bool(getattr(model, "bi", False))


def predict_texts(model, tokenizer, texts: list[str], pair: str | None = None, top: int = 1, batch_size: int = 64) -> list[dict]:
    """cls: {"label", "probability", "top"}; regression: {"value"}; token: {"words", "tags", "entities"}."""
    head, device = model.config.head, next(model.parameters()).device
    names = model.config.labels
    if head == "token":
        words = [WORD.findall(t) for t in texts]
        results = []
        for text, w, tag_ids in zip(texts, words, tag_words(model, tokenizer, words, batch_size, device)):
            tags = [names[t] if names else str(t) for t in tag_ids]
            out = {"text": text, "words": w, "tags": tags}
            if names and is_bio(names):
                out["entities"] = [{"type": kind_, "start": a, "end": b, "text": " ".join(w[a:b])}
                                   for kind_, a, b in entity_spans(tags)]
            results.append(out)
        return results
    examples = [Example(text, pair, None, f"input {i + 1}") for i, text in enumerate(texts)]
    data = ClassificationData(examples, tokenizer, None, model.config.max_seq_len, batch_size, pair_encoding=model.config.pair_encoding,
                              prompt=model.config.prompt)
    outputs = torch.as_tensor(predict(model, data, device))  # (N, L) logits, or (N,) values
    if head == "regression":
        return [{"text": text, "value": float(v)} for text, v in zip(texts, outputs)]
    names = names or [str(i) for i in range(outputs.shape[-1])]
    results = []
    for text, row in zip(texts, outputs):
        best = row.softmax(-1).topk(min(top, len(row)))
        labels = [{"label": names[i], "probability": p} for p, i in zip(best.values.tolist(), best.indices.tolist())]
        results.append({"text": text, "label": labels[0]["label"], "probability": labels[0]["probability"], "top": labels})
    return results


def target_ids(tokenizer, words: list[str]) -> tuple[list[int], list[str]]:
    """The token each candidate word of fill-mask's `targets` is scored by, in the order given and
    without repeats, and a notice for each word the vocabulary splits into pieces: a [MASK] stands
    for one token, so such a word is scored by its first piece (as Hugging Face's fill-mask pipeline
    does). A word that encodes to no token, or only to [UNK], is refused by name."""
    ids, notices = [], []
    unk = getattr(tokenizer, "unk_id", None)
    for word in words:
        pieces = tokenizer.encode(word, add_special=False)
        if not pieces or pieces == [unk]:
            raise ValueError(f"the target {word!r} is not in the vocabulary (it encodes to "
                             f"{'nothing' if not pieces else tokenizer.id_to_token(unk)})")
        if len(pieces) > 1:
            shown = " ".join(tokenizer.id_to_token(i) for i in pieces)
            notices.append(f"notice: the target {word!r} is {len(pieces)} tokens ({shown}); "
                           f"its first, {tokenizer.id_to_token(pieces[0])!r}, is scored")
        if pieces[0] not in ids:
            ids.append(pieces[0])
    if not ids:
        raise ValueError("targets: give at least one word")
    return ids, notices


@torch.no_grad()
def fill_mask(model, tokenizer, texts: list[str], top_k: int = 5, targets: list[int] | None = None,
              batch_size: int = 32) -> list[dict]:
    """{"text", "masks": [[{"token", "probability"}, ...] per MASK]}: the top_k tokens at each mask by

        p(w | text) = softmax(z)_w,    z (V,) the MLM head's logits at the mask,

    over the whole vocabulary, or over `targets` alone (token ids, `target_ids`), each with its
    probability under the same softmax over the whole vocabulary (not renormalised over the targets).
    Texts go through the encoder `batch_size` at a time, right-padded with an attention mask, and
    the MLM head reads the masks' states alone."""
    tokenizer.require(["mask"], "fill-mask")
    device, results = next(model.parameters()).device, []
    mask = tokenizer.special_token("mask")
    rows = []
    for text in texts:
        full = tokenizer.encode(text)
        ids = full[: model.config.max_seq_len]
        if tokenizer.mask_id not in ids:
            if tokenizer.mask_id in full:
                raise ValueError(f"the {mask} of {text[:60]!r}... lies past the model's {model.config.max_seq_len} positions "
                                 f"(the text is {len(full)} tokens); shorten the text before it")
            raise ValueError(f"no {mask} in {text!r}")
        rows.append(ids)
    candidates = None if targets is None else torch.tensor(targets)  # (K,)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        input_ids = pad(chunk, tokenizer.fill_id).to(device)  # (B, T), right-padded
        attention = pad([[1] * len(r) for r in chunk], 0).to(device)  # (B, T)
        at_mask = (input_ids == tokenizer.mask_id) & attention.bool()  # (B, T)
        h = model.hidden(input_ids, attention)[at_mask]  # (N, C): the masks, row by row, left to right
        p = model.mlm(h).float().softmax(-1).cpu()  # (N, V)
        if candidates is not None:
            p = p[:, candidates]  # (N, K)
        best = p.topk(min(top_k, p.shape[-1]))
        ids = best.indices if candidates is None else candidates[best.indices]  # (N, top_k) token ids
        n = 0
        for text, count in zip(texts[start : start + batch_size], at_mask.sum(1).tolist()):
            masks = [[{"token": tokenizer.id_to_token(i), "probability": float(q)} for q, i in zip(qs, js)]
                     for qs, js in zip(best.values[n : n + count].tolist(), ids[n : n + count].tolist())]
            results.append({"text": text, "masks": masks})
            n += count
    return results


@torch.no_grad()
def embed_texts(model, tokenizer, texts: list[str], normalize: bool = True, batch_size: int = 64) -> torch.Tensor:
    """Sentence embeddings (N, C): the mean of the last hidden states over the real tokens,

        e = sum_t m_t h_t / sum_t m_t,    m_t = 1 for a real token, 0 for padding,

    as Sentence-BERT pools (Reimers and Gurevych 2019), then scaled to unit length (cosine
    similarity becomes a dot product) unless normalize=False. A bi-encoder fine-tuned with
    `--pooling cls` gives the [CLS] states its head compares."""
    model.eval()
    device, out = next(model.parameters()).device, []
    for start in range(0, len(texts), batch_size):
        ids, segments = tokenizer.encode_batch(texts[start : start + batch_size], max_len=model.config.max_seq_len)
        input_ids = pad(ids, tokenizer.fill_id).to(device)  # (B, T), right-padded
        mask = pad([[1] * len(r) for r in ids], 0).to(device)  # (B, T)
        if model.config.arch == "encoder-decoder":
            h = model.encode(input_ids, mask)  # (B, T, C)
        else:
            h = model.hidden(input_ids, mask)  # (B, T, C)
        e = pool(h, mask, model.config.pooling if needs_pair(model) else "mean")  # (B, C)
        out.append(torch.nn.functional.normalize(e.float(), dim=-1) if normalize else e.float())
    return torch.cat(out).cpu()

