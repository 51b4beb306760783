"""Evaluation metrics, written out (no scikit-learn): accuracy, precision / recall / F1, confusion
matrix, correlations and perplexity."""

from __future__ import annotations

import math

import numpy as np


def confusion_matrix(gold, pred, n_labels: int) -> np.ndarray:
    """C[i, j] = how many examples of gold class i were predicted as class j."""
    matrix = np.zeros((n_labels, n_labels), dtype=np.int64)
    np.add.at(matrix, (np.asarray(gold, dtype=np.int64), np.asarray(pred, dtype=np.int64)), 1)
    return matrix


def classification_report(gold, pred, labels: list[str]) -> dict:
    """accuracy, macro and micro precision / recall / F1, per-class F1 and the confusion matrix.

        P_c = TP_c / (TP_c + FP_c),  R_c = TP_c / (TP_c + FN_c),  F1_c = 2 P_c R_c / (P_c + R_c)
        macro = unweighted mean over the classes that occur in gold or pred; micro pools the counts
        (for single-label classification micro P = R = F1 = accuracy).
    """
    n = len(labels)
    C = confusion_matrix(gold, pred, n)
    tp = np.diag(C).astype(float)
    fp = C.sum(axis=0) - tp
    fn = C.sum(axis=1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = (C.sum(axis=0) + C.sum(axis=1)) > 0
    micro = tp.sum() / max(1, C.sum())
    return {
        "accuracy": float(tp.sum() / max(1, C.sum())),
        "macro_precision": float(precision[present].mean()) if present.any() else 0.0,
        "macro_recall": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "micro_precision": float(micro),
        "micro_recall": float(micro),
        "micro_f1": float(micro),
        "per_class_f1": {labels[i]: float(f1[i]) for i in range(n) if present[i]},
        "confusion_matrix": C.tolist(),
        "n": int(C.sum()),
    }


def pearson(x, y) -> float:
    """r = cov(x, y) / (std(x) std(y))."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    x, y = x - x.mean(), y - y.mean()
    denom = math.sqrt(float((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / denom) if denom > 0 else 0.0


def _ranks(x) -> np.ndarray:
    """Ranks 1..n, ties sharing their mean rank."""
    x = np.asarray(x, dtype=float)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x, y) -> float:
    """Pearson correlation of the ranks."""
    return pearson(_ranks(x), _ranks(y))


def perplexity(mean_nll: float) -> float:
    """exp of the mean negative log-likelihood per token (capped to stay finite)."""
    return float(math.exp(min(mean_nll, 50.0)))


def is_bio(tags) -> bool:
    """True when every tag is O, B-type or I-type (an entity tagging scheme, scored by entity)."""
    return all(t == "O" or t[:2] in ("B-", "I-") for t in tags)


def entity_spans(tags: list[str]) -> list[tuple[str, int, int]]:
    """(type, start, end) of the entities in one BIO sentence, end exclusive. As conlleval and
    seqeval read BIO: an entity starts at B-X, or at I-X that does not continue an X entity
    (after O or another type), and runs over the following I-X."""
    spans, start, kind = [], None, None
    for i, tag in enumerate([*tags, "O"]):
        prefix, entity = (tag[0], tag[2:]) if tag != "O" else ("O", None)
        if start is not None and (prefix != "I" or entity != kind):
            spans.append((kind, start, i))
            start = None
        if prefix in ("B", "I") and start is None:
            start, kind = i, entity
    return spans


def entity_report(gold: list[list[str]], pred: list[list[str]]) -> dict:
    """Entity-level precision, recall and F1 (an entity counts only with its exact type and span):

        P = |gold ∩ predicted| / |predicted|,  R = |gold ∩ predicted| / |gold|,  F1 = 2PR / (P + R)

    pooled over all sentences (micro), with per-type F1."""
    def entity_set(sentences):
        return {(i, *span) for i, tags in enumerate(sentences) for span in entity_spans(tags)}

    g, p = entity_set(gold), entity_set(pred)
    types = sorted({e[1] for e in g | p})

    def prf(gs, ps):
        tp = len(gs & ps)
        precision = tp / len(ps) if ps else 0.0
        recall = tp / len(gs) if gs else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        return precision, recall, f1

    precision, recall, f1 = prf(g, p)
    per_type = {t: prf({e for e in g if e[1] == t}, {e for e in p if e[1] == t})[2] for t in types}
    return {"precision": precision, "recall": recall, "f1": f1, "per_type_f1": per_type, "entities": len(g), "predicted": len(p)}


def _char_ngrams(text: str, n: int) -> dict:
    counts: dict = {}
    for i in range(len(text) - n + 1):
        counts[text[i : i + n]] = counts.get(text[i : i + n], 0) + 1
    return counts


def chrf(hypotheses: list[str], references: list[str], max_order: int = 6, beta: float = 2.0) -> float:
    """Corpus-level chrF (Popović 2015), on a 0-100 scale, as sacreBLEU computes it by default.

    Whitespace is removed; for each n = 1..6 the clipped matches of character n-grams, and the
    n-grams of hypotheses and references, are summed over the corpus (a hypothesis's n-grams count
    only where its reference is long enough to have n-grams). With P and R the precision and
    recall averaged over the orders where both sides have n-grams,

        chrF = (1 + beta^2) P R / (beta^2 P + R),  beta = 2 (recall weighs twice as much).
    """
    match, hyp, ref = [0] * max_order, [0] * max_order, [0] * max_order
    for h, r in zip(hypotheses, references):
        h, r = "".join(h.split()), "".join(r.split())
        for n in range(1, max_order + 1):
            hc, rc = _char_ngrams(h, n), _char_ngrams(r, n)
            hyp[n - 1] += sum(hc.values()) if rc else 0  # a reference too short for order n scores no n-grams
            ref[n - 1] += sum(rc.values())
            match[n - 1] += sum(min(c, rc.get(g, 0)) for g, c in hc.items())
    orders = [n for n in range(max_order) if hyp[n] > 0 and ref[n] > 0]
    if not orders:
        return 0.0
    precision = sum(match[n] / hyp[n] for n in orders) / len(orders)
    recall = sum(match[n] / ref[n] for n in orders) / len(orders)
    if precision + recall == 0:
        return 0.0
    return 100 * (1 + beta**2) * precision * recall / (beta**2 * precision + recall)
