"""Convert checkpoints between minilm and Hugging Face `transformers`.

    python -m minilm.convert --to-hf runs/pretrain-decoder hf/my-gpt2      # minilm -> GPT2LMHeadModel
    python -m minilm.convert --from-hf hf/bert-base runs/bert-base         # BertForMaskedLM -> minilm

A minilm checkpoint is a directory of model.safetensors, config.json (minilm's ModelConfig) and
tokenizer.json. A Hugging Face checkpoint is a directory of config.json (with a "model_type"),
model.safetensors or pytorch_model.bin, and tokenizer.json or vocab.txt. Families:

    minilm Encoder          <-> BERT   (BertModel, BertForMaskedLM, BertForPreTraining,
                                        BertForSequenceClassification, BertForTokenClassification)
    minilm Decoder          <-> GPT-2  (GPT2Model, GPT2LMHeadModel)
    minilm EncoderDecoder   <-> BART   (BartModel, BartForConditionalGeneration)

A minilm model converts only if the family can hold its architecture: BERT and BART are post-norm
(train with --norm-position post), GPT-2 pre-norm; all three use learned positions and LayerNorm.
The output directory is written whole or not at all; an existing one is replaced only with
--overwrite. `transformers` is not needed: the name maps live in minilm/interop/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from minilm import interop
from minilm.checkpoint import from_pretrained, resolve_checkpoint, save_checkpoint
from minilm.tokenizer import Tokenizer


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m minilm.convert", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    direction = p.add_mutually_exclusive_group(required=True)
    direction.add_argument("--to-hf", action="store_true", help="SRC is a minilm checkpoint; write DST as a Hugging Face checkpoint")
    direction.add_argument("--from-hf", action="store_true", help="SRC is a Hugging Face checkpoint; write DST as a minilm checkpoint")
    p.add_argument("src", metavar="SRC", help="the checkpoint directory to read")
    p.add_argument("dst", metavar="DST", help="the checkpoint directory to write")
    p.add_argument("--overwrite", action="store_true", help="replace DST if it already exists (default: refuse)")
    return p


def convert(src, dst, to_hf: bool) -> str:
    """Convert one checkpoint directory; returns a one-line summary. Errors are ValueError or FileNotFoundError."""
    src = resolve_checkpoint(src)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such checkpoint directory")
    if to_hf:
        if interop.is_hf_checkpoint(src):
            raise ValueError(f"{src / 'config.json'}: already a Hugging Face checkpoint (use --from-hf to read it)")
        model = from_pretrained(src)
        tokenizer = Tokenizer.load(src) if (src / "tokenizer.json").is_file() else None
        hf = interop.save_hf(model, tokenizer, dst)
        return f"wrote {dst}: {hf['architectures'][0]} ({model.num_parameters():,} parameters)"
    if not interop.is_hf_checkpoint(src):
        raise ValueError(f"{src / 'config.json'}: no \"model_type\" field, so not a Hugging Face checkpoint (use --to-hf to write one)")
    model, tokenizer = interop.load_hf(src)
    save_checkpoint(dst, model, tokenizer)
    return f"wrote {dst}: minilm {model.config.arch} with head {model.config.head!r} ({model.num_parameters():,} parameters)"


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    dst = Path(args.dst)
    if dst.exists() and not (dst.is_dir() and not any(dst.iterdir())) and not args.overwrite:
        sys.exit(f"error: {dst} exists and is not empty (give --overwrite to replace it)")
    try:
        print(convert(args.src, dst, to_hf=args.to_hf))
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
