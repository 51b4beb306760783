"""Pretrain a minilm model: MLM (+NSP) or ELECTRA's replaced-token detection for an encoder,
causal LM for a decoder, span corruption for an encoder-decoder.

    python train.py                                         # BERT-like encoder, MLM + NSP, WordNet corpus
    python train.py --arch decoder --objective clm          # GPT-like decoder
    python train.py --arch encoder-decoder --objective denoise
    python train.py --objective electra --out runs/pretrain-electra   # ELECTRA: replaced-token detection
    python train.py --data my_corpus.txt --max-steps 200 --preset tiny --out runs/try
    python train.py --resume                                # continue a killed run
    torchrun --nproc_per_node 2 train.py --batch-size 32    # 2 processes (DDP): global batch 64
    python train.py --init runs/pretrain-encoder --data train.tsv test.tsv --text-col text --max-steps 500 --out runs/tapt

The corpus is a text file (.txt or .txt.gz: one passage per line, documents separated by blank
lines), a folder of them, or JSONL with a "text" field; or a token-shard directory that a
data/<name>/prepare.py recipe wrote (python data/tinyshakespeare/prepare.py, then
--data data/tinyshakespeare/shards). A raw corpus is cleaned, split and tokenized once, streaming,
into <out>/data (reused while the corpus and the flags that shape it stay the same); a tokenizer
(WordPiece for the encoder, byte-level BPE otherwise) is trained on it unless --tokenizer names
one. The model, its config and tokenizer land in --out (default runs/pretrain-<arch>), with
metrics.jsonl and a resumable checkpoint/.

--init CKPT continues pretraining a checkpoint (a directory, or a shipped name) instead of a fresh
model: its weights, architecture and tokenizer are kept (--vocab-size, --tokenizer and shape flags
are refused), with the head the objective needs: the checkpoint's own when it has one, else a new
one; --out defaults to runs/<its name>-continued. With --text-col (and --text-pair-col) the --data
files are task files (CSV, TSV, JSONL) of which only those columns are read, each row one document
(its text, then its pair text) and the labels never: task-adaptive pretraining (Gururangan et al.
2020), MLM for an encoder, before `finetune.py --init <out>`. CoNLL and CoNLL-U files (*.conll,
*.conllu: tagging data) are read as their sentences, each one document, the tags never.

--objective electra (Clark et al. 2020; minilm/training/electra.py, docs/electra.md) trains the encoder as
a discriminator that tells which tokens a small MLM generator (--electra-generator-size of its
width, the same depth, sharing its embeddings) replaced: loss = L_MLM + --electra-weight x L_Disc.
The saved model is the discriminator alone, a plain encoder for `finetune.py --init <out>`; the
generator is kept beside it in helpers.safetensors, for --resume.

Under torchrun, --batch-size is per rank: the global batch is batch-size x ranks x grad-accum, and
N ranks with --batch-size B take the same steps as one process with --batch-size N*B (see
minilm/training/distributed.py; --fsdp shards the model instead of replicating it). Checkpoints hold the
plain model, so a run resumes in any number of processes.
"""

import argparse
import sys
from pathlib import Path


from minilm.checkpoint import CONFIG_FILE, resolve_checkpoint
from minilm.cli import a_or_an, add_model_args, add_plugin_arg, add_train_args, check_positive, check_train_flags, compile_if_asked, global_batch, init_checkpoint, load_plugins, model_overrides, seed_everything, start, train_args
from minilm.config import ModelConfig, from_preset
from minilm.data.pipeline import dropped_lines, prepare_corpus
from minilm.data.pretrain import OBJECTIVES, ROWS, PretrainBatches
from minilm.data.shards import TokenShards, is_shard_dir
from minilm.metrics import perplexity
from minilm.model.families import build_model
from minilm.tokenizer import Tokenizer
from minilm.training import distributed
from minilm.training.electra import ELECTRA
from minilm.training.finetuning import init_model
from minilm.training.pretraining import OBJECTIVE_ARCH, OBJECTIVE_HEAD, evaluate_pretraining, init_output_bias, pretraining_loss, pretraining_targets, unigram_baseline
from minilm.training.trainer import Trainer, TrainingStopped

ROOT = Path(__file__).resolve().parent
DEFAULT_DATA = ROOT / "data" / "wordnet" / "corpus.txt.gz"
DEFAULT_OBJECTIVE = {"encoder": "mlm+nsp", "decoder": "clm", "encoder-decoder": "denoise"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=list(DEFAULT_OBJECTIVE), help="model family (default: from --objective, else encoder)")
    p.add_argument("--objective", choices=OBJECTIVES, help="pretraining objective (default: the family's own)")
    p.add_argument("--data", nargs="+", default=[str(DEFAULT_DATA)],
                   help="corpus files or folders (several are read as one corpus, in the order given), or one token-shard directory (default: the WordNet corpus shipped in data/wordnet)")
    p.add_argument("--init", help="continue pretraining this checkpoint (directory or shipped name): its weights, architecture and tokenizer (default: a new model)")
    p.add_argument("--text-col", help="read --data as task files (.csv/.tsv/.jsonl[.gz]) and pretrain on this column's text, each row one document; "
                                      "the labels are never read, so the unlabeled text of every split (train, dev, test) may be given")
    p.add_argument("--text-pair-col", help="with --text-col: the column of the second text of a pair, read as the row's second line")
    p.add_argument("--tokenizer", help="an existing tokenizer.json (or checkpoint directory) instead of training one")
    p.add_argument("--vocab-size", type=int, help="vocabulary size of a newly trained tokenizer (default: 8192)")
    p.add_argument("--val-fraction", type=float, default=0.02, help="share of the corpus lines held out for evaluation (default: %(default)s)")
    p.add_argument("--split-seed", type=int, default=0,
                   help="seed of the draw of held-out blocks, apart from --seed: runs that continue one another with other "
                        "seeds keep the same held-out lines (default: %(default)s)")
    p.add_argument("--whole-word-masking", action="store_true", help="MLM masks whole words (all WordPiece pieces of a chosen word) instead of single pieces")
    p.add_argument("--doc-mask", action="store_true", help="causal LM: documents packed into a row attend only within themselves, positions restarting at each")
    p.add_argument("--mlm-rows", choices=ROWS, default="consecutive",
                   help="what an mlm or electra row holds: a run of consecutive corpus lines, or whole lines drawn at random "
                        "(for dictionaries, whose neighbouring lines define related words: there a masked word is often "
                        "written in the next line, and a model learns to copy) (default: %(default)s)")
    p.add_argument("--electra-generator-size", type=float, metavar="FRACTION",
                   help="--objective electra: the generator's width as a fraction of the discriminator's, in (0, 1], same depth "
                        "(default: 0.25; the paper finds 1/4 to 1/2 best)")
    p.add_argument("--electra-weight", type=float, metavar="LAMBDA",
                   help="--objective electra: lambda, the weight of the discriminator's loss in L_MLM + lambda L_Disc (default: 50, the paper's)")
    p.add_argument("--eval-batches", type=int, default=20, help="validation batches per evaluation (default: %(default)s)")
    add_model_args(p)
    add_plugin_arg(p)
    add_train_args(p, lr=1e-3, batch_size=64, seq_len=64)
    return p


def parse_args(argv=None):
    load_plugins(sys.argv[1:] if argv is None else argv)  # before the parser: their names are among its choices
    p = build_parser()
    args = p.parse_args(argv)
    init_head = None
    if args.init:  # the family, and the head it has, are the checkpoint's
        if args.tokenizer or args.vocab_size is not None:
            p.error(f"{'--tokenizer' if args.tokenizer else '--vocab-size'}: --init {args.init} brings its own tokenizer, which continued pretraining keeps")
        try:
            base = ModelConfig.load(resolve_checkpoint(args.init) / CONFIG_FILE)
        except (ValueError, FileNotFoundError) as e:
            p.error(f"--init {args.init}: {e}")
        if args.arch not in (None, base.arch):
            p.error(f"--arch {args.arch}: --init {args.init} is {a_or_an(base.arch)} checkpoint")
        if args.objective and OBJECTIVE_ARCH[args.objective] != base.arch:
            p.error(f"--objective {args.objective} trains {a_or_an(OBJECTIVE_ARCH[args.objective])}; --init {args.init} is {a_or_an(base.arch)} checkpoint")
        args.arch, init_head = base.arch, base.head
    if args.arch is None:
        args.arch = OBJECTIVE_ARCH[args.objective] if args.objective else "encoder"
    if args.objective is None:
        args.objective = DEFAULT_OBJECTIVE[args.arch]
        if args.objective == "mlm+nsp" and (args.text_col or init_head == "mlm"):
            args.objective = "mlm"  # task rows hold no running text to draw next sentences from; an MLM-only checkpoint goes on as trained
    if OBJECTIVE_ARCH[args.objective] != args.arch:
        p.error(f"--objective {args.objective} trains {a_or_an(OBJECTIVE_ARCH[args.objective])}, not {a_or_an(args.arch)}")
    check_train_flags(p, args)
    electra_flags = [f for f in ("electra_generator_size", "electra_weight") if getattr(args, f) is not None]
    if electra_flags and args.objective != "electra":
        p.error(f"--{electra_flags[0].replace('_', '-')} applies to --objective electra only")
    if args.mlm_rows != "consecutive" and args.objective not in ("mlm", "electra"):
        p.error(f"--mlm-rows {args.mlm_rows} applies to --objective mlm and electra; {args.objective} reads consecutive text")
    if args.objective == "electra":
        args.electra_generator_size = 0.25 if args.electra_generator_size is None else args.electra_generator_size
        args.electra_weight = 50.0 if args.electra_weight is None else args.electra_weight
        if not 0 < args.electra_generator_size <= 1:
            p.error(f"--electra-generator-size must lie in (0, 1], got {args.electra_generator_size}")
        check_positive(p, args, "electra_weight")
    check_positive(p, args, "vocab_size", "eval_batches")
    args.vocab_size = args.vocab_size or 8192
    if args.text_pair_col and not args.text_col:
        p.error("--text-pair-col needs --text-col (the column of the first text)")
    if args.text_col and args.data == [str(DEFAULT_DATA)]:
        p.error("--text-col reads task files: name them with --data (for example --data train.tsv dev.tsv test.tsv)")
    if args.text_col and args.objective == "mlm+nsp":
        p.error("--objective mlm+nsp with --text-col: the rows of task files are independent examples, no running text "
                "to draw next sentences from; use --objective mlm")
    if not 0 < args.val_fraction < 0.5:
        p.error(f"--val-fraction must lie in (0, 0.5), got {args.val_fraction}")
    args.out = args.out or str(ROOT / "runs" / (f"{Path(args.init).name}-continued" if args.init else f"pretrain-{args.arch}"))
    if args.init and Path(args.out).resolve() == resolve_checkpoint(args.init).resolve():
        p.error(f"--out {args.out} is the --init checkpoint itself: write the continued model elsewhere")
    args.max_steps = args.max_steps or 300  # about 5 minutes of the mini preset on 2 CPU cores
    args.eval_every = args.eval_every or max(1, args.max_steps // 10)
    return args


def shards_for(args, out: Path, tokenizer: Tokenizer | None = None) -> Path:
    """The token-shard directory to train from: --data itself if it is one, else <out>/data,
    written from the corpus unless an identical one is already there. `tokenizer`: the one to
    tokenize with (an --init checkpoint's); else --tokenizer's, or a new one trained on the corpus."""
    shard_dirs = [d for d in args.data if is_shard_dir(d)]
    if shard_dirs:
        if len(args.data) > 1:
            sys.exit(f"error: --data {shard_dirs[0]} is a token-shard directory: give it alone (several corpora are combined from their text)")
        if args.tokenizer:
            sys.exit(f"error: --tokenizer: {shard_dirs[0]} is already tokenized (its tokenizer.json is used)")
        if args.text_col:
            sys.exit(f"error: --text-col: {shard_dirs[0]} is already tokenized; give the task files themselves")
        if tokenizer is not None and Tokenizer.load(shard_dirs[0]).to_json() != tokenizer.to_json():
            sys.exit(f"error: --data {shard_dirs[0]} was tokenized with another tokenizer than --init {args.init}'s; give its raw text")
        return Path(shard_dirs[0])
    directory = out / "data"
    kind = "wordpiece" if args.arch == "encoder" else "bpe"
    if args.tokenizer:
        tokenizer = Tokenizer.load(args.tokenizer)
    elif tokenizer is None and args.resume and (out / "checkpoint" / "tokenizer.json").exists():
        tokenizer = Tokenizer.load(out / "checkpoint")  # the run's own tokenizer, whatever happens to the shards
    print(f"token shards of {', '.join(args.data)} in {directory}: reused if unchanged, else written"
          + ("" if tokenizer else f" (a {kind} tokenizer of {args.vocab_size:,} entries trained first)"))
    meta = prepare_corpus(args.data if len(args.data) > 1 else args.data[0], directory, tokenizer, kind=kind, vocab_size=args.vocab_size,
                          val_fraction=args.val_fraction, seed=args.split_seed, columns=(args.text_col, args.text_pair_col) if args.text_col else None, reuse=True)
    left_out = dropped_lines(meta["source"].get("dropped", {}))
    print(("reused the existing shards" if meta["reused"] else "wrote the shards") + (f" (left out: {left_out})" if left_out else ""))
    return directory


def main(argv=None):
    args = parse_args(argv)
    seed_everything(args.seed)
    world, device = start(args)
    out = Path(args.out)

    # -- data ----------------------------------------------------------------------------------------
    init_path, init_tokenizer, base = init_checkpoint(args.init, args, "a new model (no --init)") if args.init else (None, None, None)
    try:
        with distributed.main_first(world):  # rank 0 writes the shards, the others reuse them
            shards = shards_for(args, out, init_tokenizer)
        train_corpus, val_corpus = TokenShards(shards, "train"), TokenShards(shards, "val")
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    tokenizer = train_corpus.tokenizer
    n = train_corpus.meta["splits"]
    print(f"data {shards}: train {n['train']['tokens']:,} tokens in {n['train']['documents']:,} documents, "
          f"val {n['val']['tokens']:,} tokens (vocabulary {tokenizer.vocab_size:,})")
    try:
        train_data = PretrainBatches(train_corpus, args.objective, args.seq_len, args.batch_size * args.grad_accum * world.size, args.seed,
                                     args.whole_word_masking, args.doc_mask, args.mlm_rows)
        val_source = PretrainBatches(val_corpus, args.objective, args.seq_len, args.batch_size * world.size, args.seed + 10_000,
                                     args.whole_word_masking, args.doc_mask, args.mlm_rows)
    except ValueError as e:
        sys.exit(f"error: {e}")
    notice = train_data.notice or val_source.notice  # one notice, though both splits may need pseudo-documents
    if notice:
        print(notice)
    val_batches = [{k: v.to(device) for k, v in val_source.batch(i).items()} for i in range(args.eval_batches)]
    baseline = unigram_baseline(train_corpus.counts(), val_corpus.counts())
    print(f"unigram baseline on val: {baseline:.3f} nats/token (perplexity {perplexity(baseline):.1f})")

    # -- model ---------------------------------------------------------------------------------------
    # no dropout by default: short pretraining runs underfit, and dropout only slows them
    # (Geiping & Goldstein 2022, "Cramming"); --dropout 0.1 restores BERT's setting
    overrides = {"dropout": 0.0, "attn_dropout": 0.0, **{k: v for k, v in model_overrides(args).items() if v is not None}}
    if init_path is None:
        config = from_preset(
            args.preset, arch=args.arch, head=OBJECTIVE_HEAD[args.objective], vocab_size=tokenizer.vocab_size,
            max_seq_len=max(args.seq_len, 8), **overrides
        )
        model, new = build_model(config), []
    else:  # the checkpoint's architecture with the objective's head: its own, loaded, where it has one
        try:
            config = base.replace(head=OBJECTIVE_HEAD[args.objective], n_labels=0, labels=[], **overrides)
            model, new = init_model(config, init_path)
        except ValueError as e:
            sys.exit(f"error: --init {args.init}: {e}")
        print(f"initialised from {init_path}; new: {', '.join(new) or 'nothing'}")
    if args.objective == "electra":  # the encoder is ELECTRA's discriminator; a new generator and replaced-token head join it
        model = ELECTRA(model, args.electra_generator_size, args.electra_weight)
        g = model.generator.config
        print(f"ELECTRA generator: {g.n_layer} layers of width {g.n_embd} ({g.n_head} heads), sharing the discriminator's embeddings; lambda {args.electra_weight:g}")
        if init_path is not None and init_output_bias(model, train_corpus.counts()):
            print("generator output bias set to the log unigram frequencies of the training tokens")
    new_head = init_path is None or any(n.startswith(("mlm.", "lm_head.")) for n in new)
    if init_path is not None and new_head:
        print(f"notice: --init {args.init} has no {config.head} head; a new one is trained from random weights")
    if new_head and init_output_bias(model, train_corpus.counts()):  # a loaded head keeps the bias it learned
        print("output bias set to the log unigram frequencies of the training tokens")
    model.to(device)
    print(f"model: {args.arch} ({f'from {args.init}' if init_path else args.preset}), {model.num_parameters():,} parameters, objective {args.objective}, device {device}")
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
    except TrainingStopped as e:
        print(f"{'error: ' if e.code == 1 else ''}{e}", file=sys.stderr)
        sys.exit(e.code)
    final = result["last_eval"]
    if final:
        summary = ", ".join(f"{k} {v:.4g}" for k, v in final.items())
        print(f"done in {result['seconds']:.0f}s at step {result['step']}: {summary} (unigram baseline perplexity {perplexity(baseline):.1f})")
    print(f"saved {out}")
    distributed.teardown()
    return result


if __name__ == "__main__":
    main()
