"""Classification by prompting, with no update of the model: each label is a word (its verbaliser),
and the model says how likely that word is in the template's slot.

    template     "{text} It was [MASK]."      {text}: the input; [MASK]: where the label's word goes
    verbalisers  {"1": "great", "0": "terrible"}

An MLM encoder (PET, Schick and Schuetze 2021) reads the template with the slot masked: n [MASK]
tokens for a verbaliser of n tokens, all predicted at once from the same input,

    s(y) = sum_i log p_MLM(v_y,i | x with n masks)

A decoder (GPT-3's zero- and few-shot use, Brown et al. 2020) reads the template up to the slot and
scores the verbaliser's tokens one after another,

    s(y) = sum_i log p_LM(v_y,i | prefix, v_y,<i)

With `normalize`, s(y) is divided by the verbaliser's length n (a longer word otherwise loses for
being long). With `calibrate` (contextual calibration, Zhao et al. 2021), the scores of a
content-free input ("N/A") under the same prompt are subtracted, s(y) - s_cf(y): a label's word
that the model favours whatever the text then wins no more often. The prediction is argmax_y s(y). Demonstrations (in-context learning): k labelled
examples, each written as the template with its verbaliser in the slot, placed before the query
(newline-separated for a decoder, space-separated for an encoder); the oldest are dropped first
when the whole does not fit the model's positions, then the query's text is shortened.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

SLOT = "[MASK]"  # where the template takes the label's word; the model's own mask token replaces it for an MLM
TEXT = "{text}"
CONTENT_FREE = "N/A"  # contextual calibration's input (Zhao et al. 2021)


def parse_verbalizers(spec: str, flag: str = "--labels") -> dict[str, str]:
    """"1=great,0=terrible" -> {"1": "great", "0": "terrible"} (label = word, comma-separated); errors name `flag`."""
    out = {}
    for part in spec.split(","):
        label, eq, word = part.partition("=")
        if not eq or not label.strip() or not word.strip():
            raise ValueError(f"{flag} {spec!r}: each entry is LABEL=WORD, comma-separated (for example 1=great,0=terrible); got {part!r}")
        if label.strip() in out:
            raise ValueError(f"{flag} {spec!r}: label {label.strip()!r} is given twice")
        out[label.strip()] = word.strip()
    if len(out) < 2:
        raise ValueError(f"{flag} {spec!r}: give at least two labels")
    return out


def check_template(template: str) -> None:
    """A template holds {text} once and [MASK] once; else ValueError."""
    if template.count(TEXT) != 1 or template.count(SLOT) != 1:
        raise ValueError(f"--template {template!r} must hold {TEXT} once (the input) and {SLOT} once (where the label's word goes)")


def fill(template: str, text: str, answer: str) -> str:
    return template.replace(TEXT, text).replace(SLOT, answer)


@dataclass
class Prompter:
    """Scores every label of a text; `model` an MLM encoder or a decoder LM, with its tokenizer."""

    model: object
    tokenizer: object
    template: str
    verbalizers: dict[str, str]
    demonstrations: list[tuple[str, str]] = ()  # (text, label) placed before every query
    normalize: bool = False
    calibrate: bool = False

    def __post_init__(self):
        check_template(self.template)
        c = self.model.config
        if c.arch == "encoder" and c.head in ("mlm", "mlm+nsp"):
            self.tokenizer.require(["mask"], "prompting an MLM encoder")
            self.kind = "mlm"
        elif c.arch == "decoder" and c.head == "lm":
            self.kind = "lm"
        else:
            raise ValueError(f"prompting needs an MLM encoder (train.py --objective mlm) or a decoder language model; "
                             f"this checkpoint is {c.arch} with a {c.head!r} head")
        unknown = sorted({label for _, label in self.demonstrations} - set(self.verbalizers))
        if unknown:
            raise ValueError(f"demonstrations with labels {unknown} that --labels gives no word for")
        self.labels = list(self.verbalizers)
        self.shots = " " if self.kind == "mlm" else "\n"

    def context(self) -> str:
        return self.shots.join(fill(self.template, text, self.verbalizers[label]) for text, label in self.demonstrations)

    def fits(self, demos: int, text: str, extra: int) -> str | None:
        """The prompt's text before the slot's filling, with the last `demos` demonstrations, or None
        when it is longer than the model's positions (`extra`: tokens the answer adds)."""
        shots = self.demonstrations[len(self.demonstrations) - demos:] if demos else []
        head = self.shots.join(fill(self.template, t, self.verbalizers[y]) for t, y in shots)
        query = self.template.replace(TEXT, text)
        full = (head + self.shots if head else "") + query
        if self.kind == "mlm":
            n = len(self.tokenizer.encode(full.replace(SLOT, self.tokenizer.special_token("mask"))))
        else:
            n = len(self.tokenizer.encode(full.split(SLOT)[0].rstrip(), add_special=False))
        return full if n + extra <= self.model.config.max_seq_len else None

    def prompt(self, text: str, extra: int) -> str:
        """The longest prompt that fits: demonstrations dropped first (oldest first), then words cut
        from the end of the text."""
        for demos in range(len(self.demonstrations), -1, -1):
            full = self.fits(demos, text, extra)
            if full is not None:
                return full
        words = text.split()
        lo, hi = 0, len(words)  # the most words that fit, by bisection
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if self.fits(0, " ".join(words[:mid]), extra) is not None else (lo, mid - 1)
        full = self.fits(0, " ".join(words[:lo]), extra)
        if full is None:
            raise ValueError(f"the template {self.template!r} alone is longer than the model's {self.model.config.max_seq_len} positions")
        return full

    @torch.no_grad()
    def scores(self, text: str) -> dict[str, float]:
        """{label: s(label)} for one text."""
        return self.mlm_scores(text) if self.kind == "mlm" else self.lm_scores(text)

    def mlm_scores(self, text: str) -> dict[str, float]:
        tk, device = self.tokenizer, next(self.model.parameters()).device
        pieces = {y: tk.encode(w, add_special=False) for y, w in self.verbalizers.items()}  # (n_y,) each
        out = {}
        for n in sorted({len(p) for p in pieces.values()}):  # one forward per verbaliser length
            full = self.prompt(text, n - 1).replace(SLOT, " ".join([tk.special_token("mask")] * n))
            ids = tk.encode(full)
            positions = [i for i, t in enumerate(ids) if t == tk.mask_id][-n:]  # the query's slot: the last masks
            logp = self.model(torch.tensor([ids], device=device))[0, positions].float().log_softmax(-1)  # (n, V)
            for y, p in pieces.items():
                if len(p) == n:
                    s = float(logp[torch.arange(n), torch.tensor(p, device=device)].sum())
                    out[y] = s / n if self.normalize else s
        return {y: out[y] for y in self.labels}

    def lm_scores(self, text: str) -> dict[str, float]:
        tk, device = self.tokenizer, next(self.model.parameters()).device
        longest = max(len(tk.encode(" " + w, add_special=False)) for w in self.verbalizers.values())
        full = self.prompt(text, longest + 1)
        prefix_text = full.split(SLOT)[0]
        prefix = tk.encode(prefix_text.rstrip(), add_special=False)
        rows, spans = [], []
        for y in self.labels:
            ids = tk.encode((prefix_text + self.verbalizers[y]).rstrip(), add_special=False)
            if ids[: len(prefix)] != prefix or len(ids) == len(prefix):  # the word merged into the prefix's last token
                ids = prefix + tk.encode(" " + self.verbalizers[y], add_special=False)
            rows.append(ids)
            spans.append((len(prefix), len(ids)))
        width = max(map(len, rows))
        batch = torch.full((len(rows), width), tk.fill_id, device=device)  # (L, T), right-padded
        mask = torch.zeros((len(rows), width), dtype=torch.long, device=device)
        for i, ids in enumerate(rows):
            batch[i, : len(ids)] = torch.tensor(ids, device=device)
            mask[i, : len(ids)] = 1
        logp = self.model(batch, mask).float().log_softmax(-1)  # (L, T, V); position t predicts token t + 1
        out = {}
        for i, (y, (a, b)) in enumerate(zip(self.labels, spans)):
            s = float(sum(logp[i, t - 1, rows[i][t]] for t in range(a, b)))
            out[y] = s / (b - a) if self.normalize else s
        return out

    def classify(self, texts: list[str]) -> list[dict]:
        """{"text", "label", "scores"} per text."""
        self.model.eval()
        results = []
        prior = self.scores(CONTENT_FREE) if self.calibrate else dict.fromkeys(self.labels, 0.0)
        for text in texts:
            s = {y: v - prior[y] for y, v in self.scores(text).items()}
            results.append({"text": text, "label": max(s, key=s.get), "scores": s})
        return results


def sample_demonstrations(examples, k: int, seed: int = 0) -> list[tuple[str, str]]:
    """k (text, label) pairs drawn from labelled examples without replacement, in a seeded order."""
    if k > len(examples):
        raise ValueError(f"--k {k}: the demonstrations file has only {len(examples)} examples")
    return [(e.text, e.label) for e in random.Random(seed).sample(list(examples), k)]
