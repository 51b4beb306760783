"""Cloze probes: does a masked LM put the word a reader expects among its five best guesses?

    python bench/cloze.py                                  # the shipped encoder, minilm-mini
    python bench/cloze.py --ckpt runs/pretrain-encoder --out bench/results/cloze_pretrain.json

Each probe is a sentence with one [MASK] and the set of words a reader would accept there (written
for this bench, not taken from any corpus or test set), in two sets: definitions, in the style of
the dictionaries minilm-mini is pretrained on, and everyday sentences. hit@5: one of the
accepted words is among the model's top five tokens at the mask. A probe whose accepted words are
none of them a single token of the model's vocabulary is reported as such and left out of the
score. Results: a JSON file and a Markdown table beside it.
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import minilm  # noqa: E402
from minilm.inference.predict import fill_mask  # noqa: E402

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


def score(model, tokenizer, probes) -> tuple[list, int, int]:
    """(rows, hits, scored) of one probe set; each row's top five and whether one is accepted."""
    rows, hits, scored = [], 0, 0
    for text, accepted in probes:
        top = [m["token"] for m in fill_mask(model, tokenizer, [text])[0]["masks"][0]]
        known = sorted(w for w in accepted if tokenizer.token_to_id(w) is not None)
        hit = bool(set(top) & accepted) if known else None
        if hit is not None:
            scored, hits = scored + 1, hits + hit
        rows.append({"text": text, "accepted": sorted(accepted), "top5": top, "hit": hit})
        print(f"{'hit ' if hit else 'miss' if hit is not None else 'n/a '} {text:62s} -> {', '.join(top)}")
    return rows, hits, scored


def table(rows, hits, scored, what: str) -> list[str]:
    lines = ["| probe | accepted | top 5 | hit |", "|---|---|---|---|"]
    lines += [f"| {r['text']} | {', '.join(r['accepted'])} | {', '.join(r['top5'])} | {'yes' if r['hit'] else 'no' if r['hit'] is not None else 'n/a'} |" for r in rows]
    return lines + ["", f"hit@5 ({what}): {hits} of {scored} ({100 * hits / max(scored, 1):.0f}%)", ""]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default="minilm-mini", help="an encoder with an MLM head: a directory or a shipped name (default: %(default)s)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cloze.json", help="results JSON (default: %(default)s)")
    args = p.parse_args(argv)
    model, tokenizer = minilm.from_pretrained(args.ckpt), minilm.Tokenizer.load(args.ckpt)
    rows, hits, scored = score(model, tokenizer, PROBES)
    s_rows, s_hits, s_scored = score(model, tokenizer, SENTENCES)
    result = {"ckpt": args.ckpt, "hit_at_5": hits / max(scored, 1), "hits": hits, "scored": scored, "probes": rows,
              "sentences": {"hit_at_5": s_hits / max(s_scored, 1), "hits": s_hits, "scored": s_scored, "probes": s_rows}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    lines = table(rows, hits, scored, "definitions") + table(s_rows, s_hits, s_scored, "everyday sentences")
    lines.append(f"`python bench/cloze.py --ckpt {args.ckpt}`")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"hit@5 definitions {hits}/{scored}, everyday sentences {s_hits}/{s_scored}")
    return result


if __name__ == "__main__":
    main()
