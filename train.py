"""Pretrain a minilm model: MLM (+NSP) for an encoder, causal LM for a decoder, span corruption
for an encoder-decoder.

    python train.py                                         # BERT-like encoder, MLM + NSP, WordNet corpus
    python train.py --arch decoder --objective clm          # GPT-like decoder
    python train.py --arch encoder-decoder --objective denoise
    python train.py --data my_corpus.txt --max-steps 200 --preset tiny --out runs/try
    python train.py --resume                                # continue a killed run
    torchrun --nproc_per_node 2 train.py --batch-size 32    # 2 processes (DDP): global batch 64

The corpus is a text file (.txt or .txt.gz: one passage per line, documents separated by blank
lines), a folder of them, or JSONL with a "text" field; or a token-shard directory that a
data/<name>/prepare.py recipe wrote (python data/tinyshakespeare/prepare.py, then
--data data/tinyshakespeare/shards). A raw corpus is cleaned, split and tokenized once, streaming,
into <out>/data (reused while the corpus and the flags that shape it stay the same); a tokenizer
(WordPiece for the encoder, byte-level BPE otherwise) is trained on it unless --tokenizer names
one. The model, its config and tokenizer land in --out (default runs/pretrain-<arch>), with
metrics.jsonl and a resumable checkpoint/.

Under torchrun, --batch-size is per rank: the global batch is batch-size x ranks x grad-accum, and
N ranks with --batch-size B take the same steps as one process with --batch-size N*B (see
minilm/distributed.py; --fsdp shards the model instead of replicating it). Checkpoints hold the
plain model, so a run resumes in any number of processes.
"""

import argparse
import sys
from pathlib import Path


from minilm import distributed
from minilm.cli import a_or_an, add_model_args, add_train_args, check_positive, check_train_flags, compile_if_asked, global_batch, model_overrides, seed_everything, start, train_args
from minilm.config import from_preset
from minilm.data.pipeline import prepare_corpus
from minilm.data.pretrain import OBJECTIVES, PretrainBatches
from minilm.data.shards import TokenShards, is_shard_dir
from minilm.metrics import perplexity
from minilm.models import build_model
from minilm.pretraining import OBJECTIVE_ARCH, OBJECTIVE_HEAD, evaluate_pretraining, init_output_bias, pretraining_loss, pretraining_targets, unigram_baseline
from minilm.tokenizer import Tokenizer
from minilm.trainer import Trainer, TrainingDiverged

ROOT = Path(__file__).resolve().parent
DEFAULT_DATA = ROOT / "data" / "wordnet" / "corpus.txt.gz"
DEFAULT_OBJECTIVE = {"encoder": "mlm+nsp", "decoder": "clm", "encoder-decoder": "denoise"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=list(DEFAULT_OBJECTIVE), help="model family (default: from --objective, else encoder)")
    p.add_argument("--objective", choices=OBJECTIVES, help="pretraining objective (default: the family's own)")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="corpus file or folder, or a token-shard directory (default: the WordNet corpus shipped in data/wordnet)")
    p.add_argument("--tokenizer", help="an existing tokenizer.json (or checkpoint directory) instead of training one")
    p.add_argument("--vocab-size", type=int, default=8192, help="vocabulary size of a newly trained tokenizer (default: %(default)s)")
    p.add_argument("--val-fraction", type=float, default=0.02, help="share of the corpus lines held out for evaluation (default: %(default)s)")
    p.add_argument("--whole-word-masking", action="store_true", help="MLM masks whole words (all WordPiece pieces of a chosen word) instead of single pieces")
    p.add_argument("--doc-mask", action="store_true", help="causal LM: documents packed into a row attend only within themselves, positions restarting at each")
    p.add_argument("--eval-batches", type=int, default=20, help="validation batches per evaluation (default: %(default)s)")
    add_model_args(p)
    add_train_args(p, lr=1e-3, batch_size=64, seq_len=64)
    return p


def parse_args(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    if args.arch is None:
        args.arch = OBJECTIVE_ARCH[args.objective] if args.objective else "encoder"
    if args.objective is None:
        args.objective = DEFAULT_OBJECTIVE[args.arch]
    if OBJECTIVE_ARCH[args.objective] != args.arch:
        p.error(f"--objective {args.objective} trains {a_or_an(OBJECTIVE_ARCH[args.objective])}, not {a_or_an(args.arch)}")
    check_train_flags(p, args)
    check_positive(p, args, "vocab_size", "eval_batches")
    if not 0 < args.val_fraction < 0.5:
        p.error(f"--val-fraction must lie in (0, 0.5), got {args.val_fraction}")
    args.out = args.out or str(ROOT / "runs" / f"pretrain-{args.arch}")
    args.max_steps = args.max_steps or 300  # about 5 minutes of the mini preset on 2 CPU cores
    args.eval_every = args.eval_every or max(1, args.max_steps // 10)
    return args


def shards_for(args, out: Path) -> Path:
    """The token-shard directory to train from: --data itself if it is one, else <out>/data,
    written from the corpus unless an identical one is already there."""
    if is_shard_dir(args.data):
        if args.tokenizer:
            sys.exit(f"error: --tokenizer: {args.data} is already tokenized (its tokenizer.json is used)")
        return Path(args.data)
    directory = out / "data"
    kind = "wordpiece" if args.arch == "encoder" else "bpe"
    tokenizer = None
    if args.tokenizer:
        tokenizer = Tokenizer.load(args.tokenizer)
    elif args.resume and (out / "checkpoint" / "tokenizer.json").exists():
        tokenizer = Tokenizer.load(out / "checkpoint")  # the run's own tokenizer, whatever happens to the shards
    print(f"token shards of {args.data} in {directory}: reused if unchanged, else written"
          + ("" if tokenizer else f" (a {kind} tokenizer of {args.vocab_size:,} entries trained first)"))
    meta = prepare_corpus(args.data, directory, tokenizer, kind=kind, vocab_size=args.vocab_size,
                          val_fraction=args.val_fraction, seed=args.seed, reuse=True)
    print("reused the existing shards" if meta["reused"] else "wrote the shards")
    return directory


def main(argv=None):
    args = parse_args(argv)
    seed_everything(args.seed)
    world, device = start(args)
    out = Path(args.out)

    # -- data ----------------------------------------------------------------------------------------
    try:
        with distributed.main_first(world):  # rank 0 writes the shards, the others reuse them
            shards = shards_for(args, out)
        train_corpus, val_corpus = TokenShards(shards, "train"), TokenShards(shards, "val")
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    tokenizer = train_corpus.tokenizer
    n = train_corpus.meta["splits"]
    print(f"data {shards}: train {n['train']['tokens']:,} tokens in {n['train']['documents']:,} documents, "
          f"val {n['val']['tokens']:,} tokens (vocabulary {tokenizer.vocab_size:,})")
    try:
        train_data = PretrainBatches(train_corpus, args.objective, args.seq_len, args.batch_size * args.grad_accum * world.size, args.seed, args.whole_word_masking, args.doc_mask)
        val_source = PretrainBatches(val_corpus, args.objective, args.seq_len, args.batch_size * world.size, args.seed + 10_000, args.whole_word_masking, args.doc_mask)
    except ValueError as e:
        sys.exit(f"error: {e}")
    val_batches = [{k: v.to(device) for k, v in val_source.batch(i).items()} for i in range(args.eval_batches)]
    baseline = unigram_baseline(train_corpus.counts(), val_corpus.counts())
    print(f"unigram baseline on val: {baseline:.3f} nats/token (perplexity {perplexity(baseline):.1f})")

    # -- model ---------------------------------------------------------------------------------------
    # no dropout by default: short pretraining runs underfit, and dropout only slows them
    # (Geiping & Goldstein 2022, "Cramming"); --dropout 0.1 restores BERT's setting
    overrides = {"dropout": 0.0, "attn_dropout": 0.0, **{k: v for k, v in model_overrides(args).items() if v is not None}}
    config = from_preset(
        args.preset, arch=args.arch, head=OBJECTIVE_HEAD[args.objective], vocab_size=tokenizer.vocab_size,
        max_seq_len=max(args.seq_len, 8), **overrides
    )
    model = build_model(config)
    if init_output_bias(model, train_corpus.counts()):
        print("output bias set to the log unigram frequencies of the training tokens")
    model.to(device)
    print(f"model: {args.arch} ({args.preset}), {model.num_parameters():,} parameters, objective {args.objective}, device {device}")
    compile_if_asked(model, args)

    # -- loop ----------------------------------------------------------------------------------------
    settings = train_args(args, args.max_steps, eval_every=args.eval_every, metric="val_loss", mode="min")
    print(f"{args.max_steps:,} steps of {global_batch(args, world)} x {args.seq_len} tokens")
    trainer = Trainer(
        model, tokenizer, train_data, pretraining_loss(args.objective), pretraining_targets(args.objective),
        lambda m: evaluate_pretraining(m, args.objective, val_batches), settings, device=device, world=world,
    )
    try:
        result = trainer.fit()
    except TrainingDiverged as e:
        sys.exit(f"error: {e}")
    final = result["last_eval"]
    if final:
        summary = ", ".join(f"{k} {v:.4g}" for k, v in final.items())
        print(f"done in {result['seconds']:.0f}s at step {result['step']}: {summary} (unigram baseline perplexity {perplexity(baseline):.1f})")
    print(f"saved {out}")
    distributed.teardown()
    return result


if __name__ == "__main__":
    main()
