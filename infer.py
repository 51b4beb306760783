"""Use a trained minilm checkpoint: generate text, label or tag text, fill in masked words, embed
sentences, or serve a model over HTTP.

    python infer.py generate --prompt "a small" --max-new-tokens 30 --seed 0      # the shipped minilm-mini-decoder
    python infer.py generate --ckpt runs/pretrain-decoder --prompt "a tool" --greedy --stream
    python infer.py generate --ckpt runs/pretrain-decoder --prompt "a tool" --num-beams 4 --length-penalty 1.0
    python infer.py predict --ckpt runs/finetune-cls "a large carnivorous bird of prey"
    echo "a building where people live" | python infer.py predict --ckpt runs/finetune-cls --json
    python infer.py predict --ckpt runs/finetune-ner "Alice flew to Paris on Monday"      # entity spans
    python infer.py predict --ckpt runs/finetune-cls --quantize int8 --file texts.txt     # int8 on the CPU
    python infer.py fill-mask "a domestic [MASK] that barks"                     # the shipped minilm-mini
    python infer.py embed --ckpt runs/pretrain-encoder "a dog" "a cat" --json
    python infer.py classify --template "{text} It was [MASK]." --labels 1=great,0=terrible --file dev.tsv --text-col sentence --label-col label
    python infer.py classify --ckpt minilm-mini-decoder --template "{text} It was [MASK]." --labels 1=great,0=terrible \
        --file dev.tsv --text-col sentence --label-col label --shots train.tsv --k 4    # in-context demonstrations
    python infer.py serve --ckpt runs/finetune-cls --port 8000      # http://127.0.0.1:8000/predict

Without --ckpt, generate uses the shipped decoder minilm-mini-decoder, fill-mask, embed and classify the
shipped encoder minilm-mini (minilm/pretrained), and predict and serve runs/finetune-cls, where
`python finetune.py --task cls` writes its model. Inputs of predict, fill-mask and embed come from the arguments, else --file, else standard input
(one per line). --json prints one JSON object per input.
"""

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from minilm.cli import EMULATED_BF16, a_or_an, add_plugin_arg, auto_dtype, load_plugins
from minilm.data.corpus import not_utf8, open_text
from minilm.inference import predict
from minilm.inference.predict import GenerationSettings
from minilm.tokenizer import MASK
from minilm.training.trainer import autocast, cpu_has_bf16

ROOT = Path(__file__).resolve().parent
DEFAULT_CKPT = {  # a shipped checkpoint's name (minilm/pretrained), or a run folder of this repository
    "generate": "minilm-mini-decoder",
    "predict": ROOT / "runs" / "finetune-cls",
    "fill-mask": "minilm-mini",
    "embed": "minilm-mini",
    "classify": "minilm-mini",
    "serve": ROOT / "runs" / "finetune-cls",
}


SERVE_API = """An HTTP JSON API over one checkpoint, on 127.0.0.1 unless --host says otherwise.

  GET  /health    {"status", "arch", "head", "can"}
  POST /generate  {"prompt": str} or {"prompts": [str]}; optional "max_new_tokens", "greedy", "temperature",
                  "top_k", "top_p", "repetition_penalty", "num_beams", "length_penalty", "stop", "seed",
                  "stream" (true: server-sent events of {"text": piece}, then {"done": true, "text", "tokens"})
                  -> {"text", "tokens"} or {"results": [...]}
  POST /predict   {"text": str} or {"texts": [str]}, optional "pair", "top" -> a result or {"results": [...]}
  POST /fill-mask {"text": str} or {"texts": [str]} holding [MASK], optional "top_k" (at most 100) and "targets"
                  (candidate words, at most 1,000) -> {"text", "masks"} or {"results": [...]}
  POST /embed     {"text": str} or {"texts": [str]} -> {"embedding"} or {"embeddings": [...]}

Errors are JSON {"error": ...} with a 4xx code (500 for a failure inside the server); a stream that
fails ends with a {"error": ...} event. SIGTERM or Ctrl-C finish the requests in flight, then exit.
"""


def add_generation_flags(g):
    g.add_argument("--max-new-tokens", type=int, default=50, help="tokens to generate at most (default: %(default)s)")
    g.add_argument("--greedy", action="store_true", help="always take the most likely token")
    g.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default: %(default)s)")
    g.add_argument("--top-k", type=int, help="sample among the k most likely tokens only (default: off)")
    g.add_argument("--top-p", type=float, help="sample from the smallest set of tokens with probability >= p (default: off)")
    g.add_argument("--repetition-penalty", type=float, default=1.0,
                   help="CTRL repetition penalty, > 1 discourages repeats (default: %(default)s, off)")
    g.add_argument("--num-beams", type=int, default=1,
                   help="beam search with this many beams; the sampling flags do not apply to it (default: 1, no beam search)")
    g.add_argument("--length-penalty", type=float, default=1.0,
                   help="beam search: scores are divided by length ** this; > 0 favours longer outputs (default: %(default)s)")
    g.add_argument("--stop", action="append", default=[], help="stop when this string is generated (repeatable)")
    g.add_argument("--seed", type=int, help="random seed for sampling: the same seed gives the same text (default: a fresh one)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="{generate,predict,fill-mask,embed,classify,serve}")

    g = sub.add_parser("generate", help="continue a prompt with a decoder (or encoder-decoder) checkpoint")
    g.add_argument("--prompt", action="append", required=True, help="text to continue (repeat for a batch)")
    add_generation_flags(g)
    g.add_argument("--stream", action="store_true",
                   help="print text as it is produced (one prompt, no beams, no --json; otherwise the whole text at the end)")

    pr = sub.add_parser("predict", help="label texts (classifier), score them (regression) or tag their words (ner)")
    pr.add_argument("texts", nargs="*", help="texts to label (default: --file, else standard input)")
    pr.add_argument("--pair", help="a second text, paired with each input (pair classifiers)")
    pr.add_argument("--top", type=int, default=1, help="how many labels to show per text (default: %(default)s)")

    fm = sub.add_parser("fill-mask", help=f"predict the {MASK} tokens of texts with an MLM checkpoint")
    fm.add_argument("texts", nargs="*", help=f"texts containing {MASK} (default: --file, else standard input)")
    fm.add_argument("--top-k", type=int, default=5, help="candidates per mask (default: %(default)s)")
    fm.add_argument("--targets", metavar="WORD,WORD,...",
                    help="score only these candidate words at each mask, best first, each with its probability over the "
                         "whole vocabulary; a word the vocabulary splits is scored by its first piece, with a notice "
                         "(Hugging Face's fill-mask targets)")

    em = sub.add_parser("embed", help="mean-pooled sentence embeddings of texts")
    em.add_argument("texts", nargs="*", help="texts to embed (default: --file, else standard input)")
    em.add_argument("--no-normalize", action="store_true", help="keep the raw mean (default: scaled to unit length)")

    cl = sub.add_parser("classify", help="label texts by prompting an MLM encoder or a decoder, with no training",
                        description="Zero- and few-shot classification: each label is a word in the template's [MASK] slot, and "
                                    "the model's likelihood of that word decides (minilm/inference/prompting.py).")
    cl.add_argument("texts", nargs="*", help="texts to label (default: the --text-col of --file)")
    cl.add_argument("--template", required=True, help='the prompt, with {text} for the input and [MASK] for the label\'s word, '
                    'for example "{text} It was [MASK]."')
    cl.add_argument("--labels", required=True, help="each label and its word (verbaliser), for example 1=great,0=terrible")
    cl.add_argument("--file", help="a CSV, TSV or JSONL file of texts (optionally with labels: then the metrics are printed)")
    cl.add_argument("--text-col", default="text", help="column of the text in --file and --shots (default: %(default)s)")
    cl.add_argument("--label-col", help="column of the gold label in --file: print accuracy and F1 instead of each prediction")
    cl.add_argument("--shots", help="a labelled file (same columns) to draw in-context demonstrations from")
    cl.add_argument("--k", type=int, default=4, help="demonstrations drawn from --shots (default: %(default)s)")
    cl.add_argument("--seed", type=int, default=0, help="seed of the demonstrations' draw (default: %(default)s)")
    cl.add_argument("--shots-label-col", default="label", help="column of the label in --shots (default: %(default)s)")
    cl.add_argument("--normalize", action="store_true", help="divide each label's log-likelihood by its word's length in tokens")
    cl.add_argument("--calibrate", action="store_true",
                    help='subtract the scores of the content-free input "N/A" under the same prompt (contextual calibration)')
    sv = sub.add_parser("serve", help="an HTTP JSON API over a checkpoint: /generate, /predict, /fill-mask, /embed, /health",
                        description=SERVE_API, formatter_class=argparse.RawDescriptionHelpFormatter)
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    sv.add_argument("--port", type=int, default=8000, help="port (default: %(default)s; 0 picks a free one)")
    sv.add_argument("--max-body-bytes", type=int, default=1 << 20, help="largest request body accepted (default: %(default)s)")
    sv.add_argument("--max-prompt-tokens", type=int, default=512, help="longest prompt accepted, in tokens (default: %(default)s)")
    sv.add_argument("--max-new-tokens-limit", type=int, default=256, help="largest max_new_tokens accepted (default: %(default)s)")
    sv.add_argument("--max-batch", type=int, default=64, help="most texts or prompts in one request (default: %(default)s)")
    sv.add_argument("--max-beams", type=int, default=8, help="largest num_beams accepted (default: %(default)s)")

    for name, s in (("generate", g), ("predict", pr), ("fill-mask", fm), ("embed", em), ("classify", cl), ("serve", sv)):
        default = DEFAULT_CKPT[name]
        shown = default if isinstance(default, str) else default.relative_to(ROOT)
        s.add_argument("--ckpt", help=f"checkpoint directory or shipped name (default: {shown})")
        s.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
        s.add_argument("--quantize", choices=["int8"], help="dynamic int8 quantisation of the Linear layers (CPU)")
        s.add_argument("--compile", action="store_true", help="compile each block with torch.compile (pays off on long runs)")
        add_plugin_arg(s)
    for s in (g, pr, fm, em, cl):
        s.add_argument("--json", action="store_true", help="print JSON instead of text")
        s.add_argument("--dtype", choices=["fp32", "bf16", "auto"], default="fp32",
                       help="compute precision: bf16 autocasts the matrix products (the weights stay fp32; faster on a CPU "
                            "with bf16 matrix instructions), as finetune.py and train.py evaluate with their default "
                            "--dtype auto; auto: bf16 where the hardware has such instructions, else fp32 (default: %(default)s)")
    for s in (pr, fm, em):
        s.add_argument("--file", help="read inputs from this file, one per line")
    for s in (pr, em):
        s.add_argument("--batch-size", type=int, default=64, help="inputs per forward pass (default: %(default)s)")
    return p


def parse_args(argv=None):
    load_plugins(sys.argv[1:] if argv is None else argv)  # a checkpoint may name the variants they register
    p = build_parser()
    args = p.parse_args(argv)
    args.ckpt = args.ckpt or str(DEFAULT_CKPT[args.command])
    for name in ("batch_size", "top", "top_k", "k", "max_body_bytes", "max_prompt_tokens", "max_new_tokens_limit", "max_batch", "max_beams"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be positive, got {value}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device}: this torch sees no CUDA device (use --device cpu)")
    if getattr(args, "dtype", "fp32") != "fp32":
        check_dtype(p, args)
    if args.command == "serve" and not 0 <= args.port <= 65535:
        p.error(f"--port must lie in [0, 65535], got {args.port}")
    return args


def check_dtype(p, args) -> None:
    """Resolve --dtype auto (fp32 under --quantize int8); refuse bf16 with int8, whose products are int8 already."""
    device = torch.device(args.device)
    if args.dtype == "auto":
        args.dtype = "fp32" if args.quantize else auto_dtype(device)
    if args.dtype == "bf16" and args.quantize:
        p.error("--quantize int8 computes its products in int8: leave --dtype at fp32")
    if args.dtype == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        print(EMULATED_BF16, file=sys.stderr)


def load(args, needs: str):
    """The checkpoint's (model, tokenizer); exits with a clear message when it cannot do `needs`."""
    try:
        model, tokenizer = predict.load(args.ckpt, args.device, args.quantize, args.compile)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        sys.exit(f"error: {e}")
    if needs in NEEDS and predict.kind(model) != needs:  # any model embeds; serve answers what the model can
        c = model.config
        sys.exit(f"error: {args.ckpt} holds {a_or_an(c.arch)} model with a {c.head!r} head; {needs} needs {NEEDS[needs]}")
    return model, tokenizer


NEEDS = {
    "generate": "a language model (train.py --arch decoder or encoder-decoder, or finetune.py --task sft/seq2seq)",
    "predict": "a cls, regression or ner checkpoint (finetune.py)",
    "fill-mask": "an MLM checkpoint (train.py)",
}


def read_inputs(args) -> list[str]:
    if args.texts:
        return args.texts
    if args.file:
        try:
            with open_text(args.file) as f:
                lines = [line.rstrip("\n") for line in f]
        except UnicodeDecodeError:
            sys.exit(f"error: {not_utf8(args.file)}")
        except OSError as e:
            sys.exit(f"error: {args.file}: {e.strerror}")
    else:
        lines = [line.rstrip("\n") for line in sys.stdin]
    lines = [line for line in lines if line.strip()]
    if not lines:
        sys.exit("error: no input texts (give them as arguments, with --file, or on standard input)")
    return lines


def settings_of(args) -> GenerationSettings:
    return GenerationSettings(args.max_new_tokens, args.greedy, args.temperature, args.top_k, args.top_p, args.repetition_penalty,
                              args.num_beams, args.length_penalty, args.stop, args.seed)


def cmd_generate(args):
    model, tk = load(args, "generate")
    stream = args.stream and len(args.prompt) == 1 and not args.json and args.num_beams == 1

    def on_text(piece):
        sys.stdout.write(piece)
        sys.stdout.flush()

    try:
        results = predict.generate_texts(model, tk, args.prompt, settings_of(args), on_text if stream else None)
    except ValueError as e:
        sys.exit(f"error: {e}")
    for r in results:
        if args.json:
            print(json.dumps(r))
        elif stream:
            print()
        else:
            print(r["text"])


def cmd_predict(args):
    model, tk = load(args, "predict")
    if args.pair is None and predict.needs_pair(model):
        sys.exit(f"error: {args.ckpt} compares text pairs (a bi-encoder, pair_encoding 'bi'): give the second text with --pair")
    for r in predict.predict_texts(model, tk, read_inputs(args), args.pair, args.top, args.batch_size):
        if args.json:
            print(json.dumps(r))
        elif "value" in r:
            print(f"{r['value']:.4f}\t{r['text']}")
        elif "tags" in r:
            print(" ".join(f"{w}/{t}" for w, t in zip(r["words"], r["tags"])))
            for e in r.get("entities", []):
                print(f"  {e['type']}: {e['text']}")
        else:
            print("\t".join(f"{x['label']} ({x['probability']:.3f})" for x in r["top"]) + f"\t{r['text']}")


def cmd_fill_mask(args):
    model, tk = load(args, "fill-mask")
    try:
        targets = None
        if args.targets is not None:
            targets, notices = predict.target_ids(tk, [w.strip() for w in args.targets.split(",") if w.strip()])
            for notice in notices:
                print(notice, file=sys.stderr)
        results = predict.fill_mask(model, tk, read_inputs(args), args.top_k, targets)
    except ValueError as e:
        sys.exit(f"error: {e}")
    for r in results:
        if args.json:
            print(json.dumps(r))
            continue
        print(r["text"])
        for n, cands in enumerate(r["masks"]):
            print(f"  {MASK} {n + 1}: " + ", ".join(f"{c['token']} ({c['probability']:.3g})" for c in cands))  # 3 digits: targets are often rare


def cmd_embed(args):
    model, tk = load(args, "embed")
    texts = read_inputs(args)
    vectors = predict.embed_texts(model, tk, texts, normalize=not args.no_normalize, batch_size=args.batch_size)
    for text, v in zip(texts, vectors.tolist()):
        print(json.dumps({"text": text, "embedding": v}) if args.json else " ".join(f"{x:.5f}" for x in v))


def _every_label_worded(rows, label_col, verbalizers, spec):
    """Exit naming the first row (file:line) whose label --labels gives no word for."""
    unworded = [r for r in rows if r.label not in verbalizers]
    if unworded:
        sys.exit(f"error: {unworded[0].where}: {label_col} {unworded[0].label!r} has no word in --labels {spec!r} "
                 f"({len(unworded)} rows; labels {sorted({r.label for r in unworded})})")


def cmd_classify(args):
    from minilm.data.tasks import read_examples
    from minilm.inference.prompting import Prompter, parse_verbalizers, sample_demonstrations
    from minilm.metrics import classification_report

    model, tk = load(args, "classify")
    try:
        verbalizers = parse_verbalizers(args.labels)
        if args.texts:
            texts, gold = args.texts, None
        elif args.file:
            rows = read_examples(args.file, args.text_col, label_col=args.label_col, require_label=bool(args.label_col))
            texts, gold = [r.text for r in rows], ([r.label for r in rows] if args.label_col else None)
            if args.label_col:
                _every_label_worded(rows, args.label_col, verbalizers, args.labels)
        else:
            sys.exit("error: give texts as arguments or a file with --file")
        demos = []
        if args.shots:
            shots = read_examples(args.shots, args.text_col, label_col=args.shots_label_col)
            _every_label_worded(shots, args.shots_label_col, verbalizers, args.labels)
            demos = sample_demonstrations(shots, args.k, args.seed)
        prompter = Prompter(model, tk, args.template, verbalizers, demos, args.normalize, args.calibrate)
        results = prompter.classify(texts)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    if gold is None:
        for r in results:
            print(json.dumps(r) if args.json else f"{r['label']}\t{r['text']}")
        return
    labels = list(verbalizers)
    report = classification_report([labels.index(y) for y in gold], [labels.index(r["label"]) for r in results], labels)
    majority = max(labels, key=gold.count)
    report.update(n=len(gold), majority_label=majority, majority_accuracy=gold.count(majority) / len(gold))
    if args.json:
        print(json.dumps(report))
    else:
        print(f"accuracy {report['accuracy']:.4f}  macro-F1 {report['macro_f1']:.4f}  on {len(gold)} texts "
              f"(majority class {majority!r}: {report['majority_accuracy']:.4f})")


def cmd_serve(args):
    from minilm.inference.serve import Limits, serve

    model, tk = load(args, "serve")
    limits = Limits(args.max_body_bytes, args.max_prompt_tokens, args.max_new_tokens_limit, args.max_batch, args.max_beams)
    try:
        serve(model, tk, args.host, args.port, limits)
    except OSError as e:  # the port is taken, the address is not this machine's ...
        sys.exit(f"error: cannot serve on {args.host}:{args.port}: {e.strerror or e}")


def main(argv=None):
    args = parse_args(argv)
    commands = {"generate": cmd_generate, "predict": cmd_predict, "fill-mask": cmd_fill_mask, "embed": cmd_embed, "classify": cmd_classify,
                "serve": cmd_serve}
    with torch.no_grad(), autocast(getattr(args, "dtype", "fp32"), torch.device(args.device)):
        commands[args.command](args)


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:  # `infer.py ... | head`: the reader left; stop quietly, as other command-line tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the final flush must not raise again
        sys.exit(128 + 13)  # 128 + SIGPIPE, the status a shell reports for a tool its pipe stopped
