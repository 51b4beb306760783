"""Write a shipped checkpoint folder (minilm/pretrained/<name>) from a run of train.py.

    python -m minilm.pretrained.export --ckpt runs/minilm-mini --name minilm-mini
    python -m minilm.pretrained.export --ckpt runs/minilm-mini --name minilm-mini --dtype bf16 --out /tmp/x

The weights are stored in half precision (fp16 by default: 10 bits of mantissa, against bf16's 7,
and the weights of a small pretrained model lie well inside fp16's range), which halves the file;
`from_pretrained` loads them back into float32. The export measures what the rounding costs: the
largest change of the probe's logits, float32 weights against the stored ones.

card.json records the probe: the logits (float32 compute on the stored weights) that the model
gives for a fixed text, those of the first ids of the vocabulary and of the five tokens it ranks
first, which tests/test_shipped.py recomputes. An encoder's are its masked-LM logits at the [MASK]
of "a domestic [MASK] that barks"; a decoder's, its next-token logits after "a domestic animal that".
Other keys already in card.json (the metrics written for the model card) are kept.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from minilm.checkpoint import from_pretrained, owned_tensors, resolve_checkpoint
from minilm.files import atomic_write, atomic_write_json
from minilm.inference.predict import prompt_ids
from minilm.pretrained import HERE
from minilm.tokenizer import Tokenizer

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
PROBES = {"encoder": "a domestic [MASK] that barks", "decoder": "a domestic animal that"}
SHOWN = 8  # logits of the probe stored in the card (the first ids of the vocabulary)


@torch.no_grad()
def probe(model, tokenizer: Tokenizer, text: str | None = None) -> dict:
    """The logits (V,) the model gives at one position of `text` (float32), that position, and the
    five best tokens: an encoder's masked-LM logits at the [MASK]; a decoder's next-token logits
    after the whole text (encoded as generation encodes a prompt)."""
    arch = model.config.arch
    text = PROBES[arch] if text is None else text
    if arch == "decoder":
        ids = torch.tensor([prompt_ids(model, tokenizer, [text])[0]])  # (1, T)
        position = ids.shape[1] - 1
        logits = model.head_logits(model.hidden(ids))[0, position]  # (V,)
    else:
        ids, segments = tokenizer.encode_batch([text])
        ids = torch.tensor(ids)  # (1, T)
        position = int((ids[0] == tokenizer.mask_id).nonzero()[0])
        h = model.hidden(ids, torch.ones_like(ids), torch.tensor(segments))  # (1, T, C)
        logits = model.mlm(h[0, position])  # (V,)
    top = logits.topk(5).indices.tolist()
    return {"text": text, "position": position, "logits": logits, "top5_ids": top, "top5": [tokenizer.id_to_token(i) for i in top]}


def export(ckpt, name: str, dtype: str = "fp16", out: Path | None = None) -> dict:
    ckpt = resolve_checkpoint(ckpt)
    out = Path(out) if out is not None else HERE / name
    model = from_pretrained(ckpt, dropout=0.0, attn_dropout=0.0).float()
    tokenizer = Tokenizer.load(ckpt)
    if not (hasattr(model, "mlm") or (model.config.arch == "decoder" and model.config.head == "lm")):
        raise ValueError(f"{ckpt}: an encoder with an MLM head or a decoder with an LM head is expected (the probe reads their logits)")
    before = probe(model, tokenizer)
    tensors = {k: v.to(DTYPES[dtype]) for k, v in owned_tensors(model).items()}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "model.safetensors", lambda tmp: save_file(tensors, tmp))
    model.config.save(out / "config.json")
    tokenizer.save(out / "tokenizer.json")
    stored = from_pretrained(out)  # what users get: the stored weights, in float32
    after = probe(stored, tokenizer)
    card_path = out / "card.json"
    card = json.loads(card_path.read_text(encoding="utf-8")) if card_path.is_file() else {}
    card.update({
        "name": name, "dtype": dtype, "parameters": sum(p.numel() for p in stored.parameters()),
        "size_bytes": (out / "model.safetensors").stat().st_size,
        "rounding_max_logit_change": float((after["logits"] - before["logits"]).abs().max()),
        "probe": {"text": after["text"], "position": after["position"], "first_logits": after["logits"][:SHOWN].tolist(),
                  "top5": after["top5"], "top5_ids": after["top5_ids"], "top5_logits": after["logits"][after["top5_ids"]].tolist()},
    })
    atomic_write_json(card_path, card)
    return card


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="the run directory of train.py (or its checkpoint/)")
    p.add_argument("--name", required=True, help="the name users give to --init and from_pretrained (e.g. minilm-mini)")
    p.add_argument("--dtype", choices=list(DTYPES), default="fp16", help="storage precision of the weights (default: %(default)s)")
    p.add_argument("--out", type=Path, help="folder to write (default: minilm/pretrained/NAME)")
    args = p.parse_args(argv)
    try:
        card = export(args.ckpt, args.name, args.dtype, args.out)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    print(f"wrote {args.out or HERE / args.name}: {card['parameters']:,} parameters, {card['size_bytes'] / 1e6:.1f} MB ({args.dtype}); "
          f"rounding moved the probe's logits by at most {card['rounding_max_logit_change']:.2e}; "
          f"'{card['probe']['text']}' -> {', '.join(card['probe']['top5'])}")
    return card


if __name__ == "__main__":
    main()
