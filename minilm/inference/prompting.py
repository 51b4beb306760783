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

    def requests(self, text: str) -> list[tuple[list[int], dict]]:
        """The model inputs that score one text: [(ids, {label: (positions, targets)})], where s(label)
        sums log p(targets[i]) at positions[i] of its row's output."""
        tk = self.tokenizer
        if self.kind == "mlm":
            pieces = {y: tk.encode(w, add_special=False) for y, w in self.verbalizers.items()}  # (n_y,) each
            out = []
            for n in sorted({len(p) for p in pieces.values()}):  # one row per verbaliser length
                full = self.prompt(text, n - 1).replace(SLOT, " ".join([tk.special_token("mask")] * n))
                ids = tk.encode(full)
                positions = [i for i, t in enumerate(ids) if t == tk.mask_id][-n:]  # the query's slot: the last masks
                out.append((ids, {y: (positions, p) for y, p in pieces.items() if len(p) == n}))
            return out
        longest = max(len(tk.encode(" " + w, add_special=False)) for w in self.verbalizers.values())
        prefix_text = self.prompt(text, longest + 1).split(SLOT)[0]
        prefix = tk.encode(prefix_text.rstrip(), add_special=False)
        out, one_token = [], {}
        for y in self.labels:  # the prefix, then the label's word; position t - 1 predicts token t
            ids = tk.encode((prefix_text + self.verbalizers[y]).rstrip(), add_special=False)
            if ids[: len(prefix)] != prefix or len(ids) == len(prefix):  # the word merged into the prefix's last token
                ids = prefix + tk.encode(" " + self.verbalizers[y], add_special=False)
            if len(ids) == len(prefix) + 1:  # a one-token word: read at the prefix's last position, shared by all such words
                one_token[y] = ([len(prefix) - 1], ids[len(prefix):])
            else:  # causal attention: the prefix's outputs do not see the word, so a row per longer word
                out.append((ids, {y: (list(range(len(prefix) - 1, len(ids) - 1)), ids[len(prefix):])}))
        return ([(prefix, one_token)] if one_token else []) + out

    @torch.no_grad()
    def score_texts(self, texts: list[str], budget: int = 4096) -> list[dict[str, float]]:
        """{label: s(label)} for each text. The rows of many texts run together, right-padded, sorted
        by length, in batches of at most `budget` tokens (rows x positions); the head's vocabulary
        logits are computed at the scored positions only."""
        rows = [(i, ids, items) for i, text in enumerate(texts) for ids, items in self.requests(text)]
        rows.sort(key=lambda r: len(r[1]))
        device = next(self.model.parameters()).device
        out = [{} for _ in texts]
        start = 0
        while start < len(rows):
            end = start + 1
            while end < len(rows) and (end + 1 - start) * len(rows[end][1]) <= budget:
                end += 1
            chunk, start = rows[start:end], end
            width = len(chunk[-1][1])
            batch = torch.full((len(chunk), width), self.tokenizer.fill_id, device=device)  # (R, T), right-padded
            mask = torch.zeros((len(chunk), width), dtype=torch.long, device=device)
            for r, (_, ids, _) in enumerate(chunk):
                batch[r, : len(ids)] = torch.tensor(ids, device=device)
                mask[r, : len(ids)] = 1
            h = self.model.hidden(batch, mask)  # (R, T, C)
            scored = [(i, y, [(r, t) for t in positions], targets) for r, (i, _, items) in enumerate(chunk) for y, (positions, targets) in items.items()]
            at = {}  # (row, position) -> its index among the distinct scored positions (labels share the slot's)
            for _, _, where, _ in scored:
                for rt in where:
                    at.setdefault(rt, len(at))
            rt = torch.tensor(list(at), device=device).view(-1, 2)  # (P, 2)
            logp = self.model.head_logits(h[rt[:, 0], rt[:, 1]]).float().log_softmax(-1)  # (P, V)
            picked = logp[torch.tensor([at[x] for _, _, where, _ in scored for x in where], device=device),
                          torch.tensor([t for *_, targets in scored for t in targets], device=device)].tolist()
            first = 0
            for i, y, _, targets in scored:
                s = sum(picked[first : first + len(targets)])
                first += len(targets)
                out[i][y] = s / len(targets) if self.normalize else s
        return [{y: o[y] for y in self.labels} for o in out]

    def scores(self, text: str) -> dict[str, float]:
        """{label: s(label)} for one text."""
        return self.score_texts([text])[0]

    def classify(self, texts: list[str], batch: int = 256) -> list[dict]:
        """{"text", "label", "scores"} per text, `batch` texts at a time."""
        self.model.eval()
        results = []
        prior = self.scores(CONTENT_FREE) if self.calibrate else dict.fromkeys(self.labels, 0.0)
        for first in range(0, len(texts), batch):
            for text, raw in zip(texts[first : first + batch], self.score_texts(texts[first : first + batch])):
                s = {y: v - prior[y] for y, v in raw.items()}
                results.append({"text": text, "label": max(s, key=s.get), "scores": s})
        return results


def sample_demonstrations(examples, k: int, seed: int = 0) -> list[tuple[str, str]]:
    """k (text, label) pairs drawn from labelled examples without replacement, in a seeded order."""
    if k > len(examples):
        raise ValueError(f"--k {k}: the demonstrations file has only {len(examples)} examples")
    return [(e.text, e.label) for e in random.Random(seed).sample(list(examples), k)]
