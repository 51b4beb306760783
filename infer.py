"""Use a trained minilm checkpoint: generate text, label text, fill in masked words.

    python infer.py generate --ckpt runs/pretrain-decoder --prompt "a small" --max-new-tokens 30 --seed 0
    python infer.py generate --ckpt runs/pretrain-decoder --prompt "a tool" --greedy --stream
    python infer.py predict --ckpt runs/finetune-cls "a large carnivorous bird of prey"
    echo "a building where people live" | python infer.py predict --ckpt runs/finetune-cls --json
    python infer.py fill-mask --ckpt runs/pretrain-encoder "a domestic [MASK] that barks"

Inputs of predict and fill-mask come from the arguments, else --file, else standard input (one
per line). --json prints one JSON object per input.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

from minilm.checkpoint import from_pretrained, resolve_checkpoint
from minilm.data.tasks import ClassificationData, Example
from minilm.finetuning import predict
from minilm.generate import generate, left_pad
from minilm.tokenizer import MASK, Tokenizer

ROOT = Path(__file__).resolve().parent
DEFAULT_CKPT = {
    "generate": ROOT / "runs" / "pretrain-decoder",
    "predict": ROOT / "runs" / "finetune-cls",
    "fill-mask": ROOT / "runs" / "pretrain-encoder",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="{generate,predict,fill-mask}")

    g = sub.add_parser("generate", help="continue a prompt with a decoder (or encoder-decoder) checkpoint")
    g.add_argument("--prompt", action="append", required=True, help="text to continue (repeat for a batch)")
    g.add_argument("--max-new-tokens", type=int, default=50, help="tokens to generate at most (default: %(default)s)")
    g.add_argument("--greedy", action="store_true", help="always take the most likely token")
    g.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default: %(default)s)")
    g.add_argument("--top-k", type=int, help="sample among the k most likely tokens only")
    g.add_argument("--top-p", type=float, help="sample from the smallest set of tokens with probability >= p")
    g.add_argument("--repetition-penalty", type=float, default=1.0, help="CTRL repetition penalty, > 1 discourages repeats")
    g.add_argument("--stop", action="append", default=[], help="stop when this string is generated (repeatable)")
    g.add_argument("--stream", action="store_true", help="print tokens as they are produced (one prompt)")
    g.add_argument("--seed", type=int, help="random seed for sampling")

    pr = sub.add_parser("predict", help="label texts with a classifier (or score them with a regression) checkpoint")
    pr.add_argument("texts", nargs="*", help="texts to label (default: --file, else standard input)")
    pr.add_argument("--pair", help="a second text, paired with each input (pair classifiers)")
    pr.add_argument("--top", type=int, default=1, help="how many labels to show per text (default: %(default)s)")

    fm = sub.add_parser("fill-mask", help=f"predict the {MASK} tokens of texts with an MLM checkpoint")
    fm.add_argument("texts", nargs="*", help=f"texts containing {MASK} (default: --file, else standard input)")
    fm.add_argument("--top-k", type=int, default=5, help="candidates per mask (default: %(default)s)")

    for s in (g, pr, fm):
        s.add_argument("--ckpt", help=f"checkpoint directory (default: {', '.join(f'{k}: {v.relative_to(ROOT)}' for k, v in DEFAULT_CKPT.items())})")
        s.add_argument("--json", action="store_true", help="print JSON instead of text")
        s.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    for s in (pr, fm):
        s.add_argument("--file", help="read inputs from this file, one per line")
        s.add_argument("--batch-size", type=int, default=64, help="inputs per forward pass (default: %(default)s)")
    return p


def parse_args(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    args.ckpt = args.ckpt or str(DEFAULT_CKPT[args.command])
    return args


def load(args):
    try:
        model = from_pretrained(args.ckpt).to(args.device)
        tokenizer = Tokenizer.load(resolve_checkpoint(args.ckpt))
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    return model, tokenizer


def read_inputs(args) -> list[str]:
    if args.texts:
        return args.texts
    if args.file:
        with open(args.file, encoding="utf-8") as f:
            lines = [line.rstrip("\n") for line in f]
    else:
        lines = [line.rstrip("\n") for line in sys.stdin]
    lines = [line for line in lines if line.strip()]
    if not lines:
        sys.exit("error: no input texts (give them as arguments, with --file, or on standard input)")
    return lines


def cut_at_stop(text: str, stops) -> tuple[str, bool]:
    hits = [text.index(s) for s in stops if s in text]
    return (text[: min(hits)], True) if hits else (text, False)


def cmd_generate(args):
    model, tk = load(args)
    if model.config.arch == "encoder" or model.config.head != "lm":
        sys.exit(f"error: {args.ckpt} is a {model.config.arch} with a {model.config.head} head; generate needs a language model")
    generator = torch.Generator(device=args.device).manual_seed(args.seed) if args.seed is not None else None
    encoder_decoder = model.config.arch == "encoder-decoder"
    prompts = [tk.encode(p, add_special=False) + ([tk.eos_id] if encoder_decoder else []) for p in args.prompt]
    input_ids, mask = left_pad(prompts, tk.pad_id)
    stream = args.stream and len(prompts) == 1 and not args.json
    produced, shown = [], [""]

    def on_step(token):  # stream: print the newly decodable text
        produced.append(int(token[0]))
        text, _ = cut_at_stop(tk.decode(produced), args.stop)
        sys.stdout.write(text[len(shown[0]) :])
        sys.stdout.flush()
        shown[0] = text

    try:
        new = generate(
            model, input_ids.to(args.device), mask.to(args.device), args.max_new_tokens, greedy=args.greedy,
            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, repetition_penalty=args.repetition_penalty,
            eos_id=tk.eos_id, pad_id=tk.pad_id, decoder_start_id=tk.bos_id, generator=generator,
            on_step=on_step if stream else None,
        )
    except ValueError as e:
        sys.exit(f"error: {e}")
    for row in new.tolist():
        tokens = row[: row.index(tk.eos_id)] if tk.eos_id in row else row
        text, stopped = cut_at_stop(tk.decode(tokens), args.stop)
        if args.json:
            print(json.dumps({"text": text, "tokens": tokens}))
        elif stream:
            print()
        else:
            print(text)


def cmd_predict(args):
    model, tk = load(args)
    head = model.config.head
    if head not in ("cls", "regression"):
        sys.exit(f"error: {args.ckpt} has a {head!r} head; predict needs a cls or regression checkpoint (finetune.py)")
    texts = read_inputs(args)
    examples = [Example(text, args.pair, None, f"input {i + 1}") for i, text in enumerate(texts)]
    data = ClassificationData(examples, tk, None, model.config.max_seq_len, args.batch_size)
    outputs = torch.as_tensor(predict(model, data, args.device))  # (N, L) logits, or (N,) values
    for text, row in zip(texts, outputs):
        if head == "regression":
            print(json.dumps({"text": text, "value": float(row)}) if args.json else f"{float(row):.4f}\t{text}")
            continue
        top = row.softmax(-1).topk(min(args.top, len(row)))
        names = model.config.labels or [str(i) for i in range(len(row))]
        labels = [{"label": names[i], "probability": p} for p, i in zip(top.values.tolist(), top.indices.tolist())]
        if args.json:
            print(json.dumps({"text": text, "label": labels[0]["label"], "probability": labels[0]["probability"], "top": labels}))
        else:
            print("\t".join(f"{x['label']} ({x['probability']:.3f})" for x in labels) + f"\t{text}")


@torch.no_grad()
def cmd_fill_mask(args):
    model, tk = load(args)
    if model.config.head not in ("mlm", "mlm+nsp"):
        sys.exit(f"error: {args.ckpt} has a {model.config.head!r} head; fill-mask needs an MLM checkpoint (train.py)")
    for text in read_inputs(args):
        ids = tk.encode(text)[: model.config.max_seq_len]
        positions = [i for i, t in enumerate(ids) if t == tk.mask_id]
        if not positions:
            sys.exit(f"error: no {MASK} in {text!r}")
        logits = model(torch.tensor([ids], device=args.device))[0]  # (T, V)
        candidates = []
        for pos in positions:
            top = logits[pos].float().softmax(-1).topk(args.top_k)
            candidates.append([{"token": tk.id_to_token(i), "probability": float(p)} for p, i in zip(top.values.tolist(), top.indices.tolist())])
        if args.json:
            print(json.dumps({"text": text, "masks": candidates}))
        else:
            print(text)
            for n, cands in enumerate(candidates):
                print(f"  [MASK] {n + 1}: " + ", ".join(f"{c['token']} ({c['probability']:.3f})" for c in cands))


def main(argv=None):
    args = parse_args(argv)
    {"generate": cmd_generate, "predict": cmd_predict, "fill-mask": cmd_fill_mask}[args.command](args)


if __name__ == "__main__":
    main()
