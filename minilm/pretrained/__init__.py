"""minilm's own pretrained checkpoints, shipped inside the package and reachable by name.

    minilm.from_pretrained("minilm-mini")               # the encoder
    python finetune.py --task cls                        # starts from minilm-mini by default
    python finetune.py --task cls --init minilm-mini     # the same, named

Each lives in a folder of this package (model.safetensors, config.json, tokenizer.json, and a
model card README.md with the corpora, the command that made it, its wall time and metrics; and
card.json, the card's numbers as data, among them the logits of a fixed input that
tests/test_shipped.py checks). A name is looked up only when no directory of that name exists
where it is given: a local folder `minilm-mini/` wins, as in other libraries that take a name or a
path. `export.py` writes such a folder from a run of train.py.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent


def names() -> list[str]:
    """The names of the shipped checkpoints (the folders here that hold a config.json)."""
    return sorted(p.name for p in HERE.iterdir() if (p / "config.json").is_file())


def shipped(name) -> Path | None:
    """The folder of the shipped checkpoint `name`, or None when minilm ships none by that name
    (or a directory of that name exists, which then wins)."""
    text = str(name)
    if Path(text).exists() or "/" in text or "\\" in text:
        return None
    folder = HERE / text
    return folder if (folder / "config.json").is_file() else None
