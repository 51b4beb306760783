"""Cloze probes: does a masked LM put the word a reader expects among its five best guesses?

    python bench/cloze.py                                  # the shipped encoder, minilm-mini
    python bench/cloze.py --ckpt runs/pretrain-encoder --out bench/results/cloze_pretrain.json

Each probe is a sentence with one [MASK] and the set of words a reader would accept there (written
for this bench, not taken from any corpus or test set), in two sets: definitions, in the style of
the dictionaries minilm-mini is pretrained on, and everyday sentences. hit@5: one of the
accepted words is among the model's top five tokens at the mask. A probe whose accepted words are
none of them a single token of the model's vocabulary is reported as such and left out of the
score. Results: a JSON file and a Markdown table beside it.

Two measures of how the guesses are made: how often the first guess copies a word of the probe
itself (a model that reads the slot guesses a word that fits there; one that reads the topic guesses
the topic's words, those of the sentence first), and hit@5 again with --context unrelated held-out
definitions (supersense dev, drawn with a fixed seed) put before each probe: a model that reads the
slot keeps its answers, one that reads the topic of the whole row takes them from the definitions.

Beside the probes, a measure no one wrote: one content word (a single token, not a stop word)
masked in each of --heldout texts drawn from held-out files (the supersense dev definitions, which
no pretraining corpus holds, and SST-2's dev sentences where ../shared/data has them), and how
often the word that was there is the model's first guess (top-1) or among its five (top-5).
"""

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import minilm  # noqa: E402
from minilm.data.prepare import STOP_WORDS  # noqa: E402
from minilm.data.tasks import read_examples  # noqa: E402
from minilm.inference.predict import fill_mask  # noqa: E402

HELD_OUT = [("supersense dev definitions", ROOT / "data" / "wordnet" / "supersense" / "dev.tsv.gz", "text"),
            ("SST-2 dev sentences", ROOT.parent / "shared" / "data" / "sst2" / "dev.tsv", "sentence")]

PROBES = [
    ("a domestic [MASK] that barks", {"dog", "animal"}),
    ("a large body of salt [MASK]", {"water"}),
    ("a period of twenty-four [MASK]", {"hours"}),
    ("the seventh day of the [MASK]", {"week"}),
    ("a young [MASK] of either sex", {"person", "child"}),
    ("a hot drink made from the dried leaves of the [MASK] plant", {"tea", "coffee"}),
    ("an instrument for measuring [MASK]", {"temperature", "pressure", "time", "distance", "weight", "angles", "speed", "heat", "length"}),
    ("a person who [MASK] books", {"writes", "reads", "sells", "collects", "publishes"}),
    ("a building where people [MASK]", {"live", "worship", "work", "meet", "pray", "sleep"}),
    ("a sharp tool used for cutting [MASK]", {"wood", "metal", "paper", "stone", "meat", "hair", "cloth", "grass"}),
    ("a musician who plays the [MASK]", {"piano", "violin", "guitar", "organ", "drum", "flute", "harp", "trumpet", "cello"}),
    ("the [MASK] of a river where it flows into the sea", {"mouth", "end"}),
    ("a soft yellow metal used in jewelry; [MASK]", {"gold"}),
    ("a large wild cat with a mane; the [MASK]", {"lion"}),
]

SENTENCES = [
    ("she poured a glass of cold [MASK] from the jug", {"water", "milk", "juice"}),
    ("the sun rises in the [MASK]", {"east", "morning"}),
    ("he opened the door with his [MASK]", {"key", "hand", "foot"}),
    ("each spring the bird builds a [MASK] in the tree", {"nest"}),
    ("the children went to [MASK] every morning", {"school", "church"}),
    ("a ship sailed across the [MASK]", {"sea", "ocean", "river", "lake", "bay"}),
    ("she cut the bread with a sharp [MASK]", {"knife"}),
    ("the farmer milked the [MASK]", {"cow", "cows", "goat", "goats"}),
    ("she wrote a [MASK] to her mother", {"letter", "note", "poem"}),
    ("the king and the [MASK] sat on their thrones", {"queen", "prince", "princess"}),
    ("there are twelve months in a [MASK]", {"year"}),
    ("snow is [MASK] and cold", {"white", "soft", "wet"}),
]


def copies(tokenizer, text: str, guess: str) -> bool:
    """The guess is one of the text's own tokens (the [MASK] aside)."""
    return guess in {tokenizer.id_to_token(i) for i in tokenizer.encode(text, add_special=False) if i != tokenizer.mask_id}


def score(model, tokenizer, probes, context: list[str] | None = None) -> tuple[list, int, int]:
    """(rows, hits, scored) of one probe set; each row's top five, whether one is accepted and
    whether the first copies a word of the probe. `context`: a text put before each probe (and
    each row says whether the first guess is a word of that text and not of the probe)."""
    rows, hits, scored = [], 0, 0
    for k, (text, accepted) in enumerate(probes):
        shown = text
        if context is not None:  # the context's first words dropped where the whole would pass the model's positions
            words = context[k].split()
            while words and len(tokenizer.encode(" ".join([*words, text]))) > model.config.max_seq_len:
                words = words[1:]
            shown = " ".join([*words, text])
        top = [m["token"] for m in fill_mask(model, tokenizer, [shown])[0]["masks"][0]]
        known = sorted(w for w in accepted if tokenizer.token_to_id(w) is not None)
        hit = bool(set(top) & accepted) if known else None
        if hit is not None:
            scored, hits = scored + 1, hits + hit
        row = {"text": text, "accepted": sorted(accepted), "top5": top, "hit": hit, "copies": copies(tokenizer, text, top[0])}
        if context is not None:  # taken from the unrelated text: in it, not in the probe
            row["from_context"] = copies(tokenizer, shown, top[0]) and not row["copies"]
        rows.append(row)
        if context is None:
            print(f"{'hit ' if hit else 'miss' if hit is not None else 'n/a '} {text:62s} -> {', '.join(top)}")
    return rows, hits, scored


def contexts(n_probes: int, k: int, seed: int = 0) -> list[str]:
    """k supersense dev definitions drawn at random for each probe, joined: unrelated text."""
    definitions = [e.text for e in read_examples(HELD_OUT[0][1], HELD_OUT[0][2], None, None)]
    rng = random.Random(seed)
    return [" ".join(rng.sample(definitions, k)) for _ in range(n_probes)]


@torch.no_grad()
def held_out(model, tokenizer, texts: list[str], n: int, seed: int = 0) -> dict:
    """Top-1 and top-5 accuracy at one masked word of each of n texts (or all, if fewer): a content
    word (alphabetic, not a stop word) that is one token of the vocabulary, drawn with `seed`; texts
    without one are skipped."""
    model.eval()
    rng, top1, top5, scored = random.Random(seed), 0, 0, 0
    for text in rng.sample(texts, min(n, len(texts))):
        ids = tokenizer.encode(text)[: model.config.max_seq_len]
        words = [i for i, t in enumerate(ids) if tokenizer.id_to_token(t).isalpha() and tokenizer.id_to_token(t) not in STOP_WORDS
                 and (i + 1 == len(ids) or not tokenizer.id_to_token(ids[i + 1]).startswith("##"))]  # a whole word: no continuation
        if not words:
            continue
        at = rng.choice(words)
        target, ids[at] = ids[at], tokenizer.mask_id
        best = model(torch.tensor([ids]))[0, at].topk(5).indices.tolist()
        top1, top5, scored = top1 + (best[0] == target), top5 + (target in best), scored + 1
    return {"texts": scored, "top1": top1 / max(scored, 1), "top5": top5 / max(scored, 1)}


def table(rows, hits, scored, what: str) -> list[str]:
    lines = ["| probe | accepted | top 5 | hit |", "|---|---|---|---|"]
    lines += [f"| {r['text']} | {', '.join(r['accepted'])} | {', '.join(r['top5'])} | {'yes' if r['hit'] else 'no' if r['hit'] is not None else 'n/a'} |" for r in rows]
    return lines + ["", f"hit@5 ({what}): {hits} of {scored} ({100 * hits / max(scored, 1):.0f}%)", ""]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default="minilm-mini", help="an encoder with an MLM head: a directory or a shipped name (default: %(default)s)")
    p.add_argument("--heldout", type=int, default=500, help="texts of each held-out file with a word masked (0: none; default: %(default)s)")
    p.add_argument("--context", type=int, default=4, help="unrelated definitions put before each probe for the second "
                   "hit@5 (0: none; default: %(default)s)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cloze.json", help="results JSON (default: %(default)s)")
    args = p.parse_args(argv)
    if args.context < 0:
        p.error(f"--context must be >= 0, got {args.context}")
    model, tokenizer = minilm.from_pretrained(args.ckpt), minilm.Tokenizer.load(args.ckpt)
    rows, hits, scored = score(model, tokenizer, PROBES)
    s_rows, s_hits, s_scored = score(model, tokenizer, SENTENCES)
    result = {"ckpt": args.ckpt, "hit_at_5": hits / max(scored, 1), "hits": hits, "scored": scored, "probes": rows,
              "sentences": {"hit_at_5": s_hits / max(s_scored, 1), "hits": s_hits, "scored": s_scored, "probes": s_rows}}
    result["first_guess_copies"] = sum(r["copies"] for r in rows + s_rows)
    if args.context:
        c = [score(model, tokenizer, probes, contexts(len(probes), args.context, seed)) for seed, probes in enumerate((PROBES, SENTENCES))]
        result["with_context"] = {"definitions_before": args.context, "hits": c[0][1], "scored": c[0][2],
                                  "sentences": {"hits": c[1][1], "scored": c[1][2]},
                                  "first_guess_from_context": sum(r["from_context"] for r in c[0][0] + c[1][0])}
    result["held_out"] = {}
    for name, path, column in HELD_OUT:
        if args.heldout and path.is_file():
            r = held_out(model, tokenizer, [e.text for e in read_examples(path, column, None, None)], args.heldout)
            where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else Path("..") / path.relative_to(ROOT.parent)
            result["held_out"][name] = {"file": str(where), **r}
            print(f"{name}: the masked word first {100 * r['top1']:.1f}%, in the top five {100 * r['top5']:.1f}% ({r['texts']} texts)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    lines = table(rows, hits, scored, "definitions") + table(s_rows, s_hits, s_scored, "everyday sentences")
    lines += [f"The first guess is a word of the probe itself in {result['first_guess_copies']} of {len(rows) + len(s_rows)} probes.", ""]
    if args.context:
        c = result["with_context"]
        lines += [f"With {args.context} unrelated supersense dev definitions before each probe: the first guess is a word "
                  f"of those definitions (and not of the probe) in {c['first_guess_from_context']} of {len(rows) + len(s_rows)} probes; "
                  f"hit@5 definitions {c['hits']} of {c['scored']}, everyday sentences {c['sentences']['hits']} of {c['sentences']['scored']}.", ""]
    if result["held_out"]:
        lines += ["| held-out texts, one content word masked | texts | the word first (top-1) | in the top five (top-5) |", "|---|---|---|---|"]
        lines += [f"| {name} | {r['texts']} | {100 * r['top1']:.1f}% | {100 * r['top5']:.1f}% |" for name, r in result["held_out"].items()]
        lines.append("")
    lines.append(f"`python bench/cloze.py --ckpt {args.ckpt}`")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"hit@5 definitions {hits}/{scored}, everyday sentences {s_hits}/{s_scored}; the first guess copies the probe in "
          f"{result['first_guess_copies']} of {len(rows) + len(s_rows)}"
          + (f"; after {args.context} unrelated definitions: {result['with_context']['hits']}/{scored}, "
             f"{result['with_context']['sentences']['hits']}/{s_scored}, the first guess taken from them in "
             f"{result['with_context']['first_guess_from_context']}" if args.context else ""))
    return result


if __name__ == "__main__":
    main()
