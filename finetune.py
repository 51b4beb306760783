"""Fine-tune a minilm model for a task on your own files.

    python finetune.py --task cls                       # WordNet supersense (25 classes), the default data
    python finetune.py --task cls --train train.csv --dev dev.csv --test test.csv --text-col sentence --label-col label
    python finetune.py --task cls --train pairs.jsonl --text-col premise --text-pair-col hypothesis
    python finetune.py --task regression --train stsb_train.tsv --dev stsb_dev.tsv --text-col sentence1 --text-pair-col sentence2 --label-col score
    python finetune.py --task ner --train train.conll --dev dev.conll --test test.conll       # CoNLL: token ... tag, blank line between sentences
    python finetune.py --task ner --train en_ewt-ud-train.conllu --dev en_ewt-ud-dev.conllu  # CoNLL-U: UPOS tags (--tag-col xpos for XPOS)
    python finetune.py --task cls --init runs/pretrain-encoder --epochs 5 --out runs/my-classifier
    torchrun --nproc_per_node 2 finetune.py --task cls --batch-size 16   # 2 processes: global batch 2 x 16

Inputs are CSV, TSV (with a header row) or JSONL, optionally gzipped; for ner, CoNLL or CoNLL-U. The label set is read from
the training file and saved with the model. --init takes a checkpoint of train.py, a Hugging Face
directory or the name of a shipped checkpoint (default: minilm-mini, minilm's own pretrained
encoder, shipped in minilm/pretrained; for sft / seq2seq, runs/pretrain-decoder /
runs/pretrain-encoder-decoder when present, else a model trained from scratch, with a notice);
"scratch" forces training from scratch. The best epoch on --dev is kept; --test is scored once at the end.
Results go to <out>/metrics.json as {"dev": {...}, "test": {...}}; the model to <out>.
"""

import argparse
import math
import sys
from pathlib import Path

from minilm import peft
from minilm.checkpoint import atomic_write_json, resolve_checkpoint
from minilm.cli import add_model_args, add_plugin_arg, add_train_args, check_positive, check_train_flags, compile_if_asked, global_batch, init_checkpoint, load_plugins, model_overrides, seed_everything, start, train_args
from minilm.config import PAIR_ENCODINGS, POOLINGS, from_preset
from minilm.data import augment
from minilm.data.tagging import TaggingData, read_conll, tag_ids, tag_set
from minilm.data.tasks import ClassificationData, label_ids, label_set, read_examples
from minilm.data.text_to_text import Seq2SeqData, SFTData
from minilm.inference.prompting import check_template, parse_verbalizers
from minilm.objectives import IGNORE_INDEX
from minilm.pretrained import shipped
from minilm.tokenizer import Tokenizer
from minilm.peft.adalora import RankAllocator, orthogonality_loss, orthogonality_targets
from minilm.training import adversarial, distill, distributed, prune
from minilm.training.finetuning import TASK_ARCH, TASK_HEADS, evaluate_task, freeze, init_model, task_loss, task_targets
from minilm.training.trainer import Trainer, TrainingStopped, autocast

ROOT = Path(__file__).resolve().parent
SHIPPED_ENCODER = "minilm-mini"  # minilm/pretrained: the encoder tasks start from it unless --init says otherwise
SYNONYMS = ROOT / "data" / "wordnet" / "synonyms.tsv.gz"  # --augment eda's WordNet synonyms
DEFAULT_INIT = {"sft": ROOT / "runs" / "pretrain-decoder", "seq2seq": ROOT / "runs" / "pretrain-encoder-decoder"}
# the data each task falls back to without --train: (folder, file name of a split, the recipe that writes it)
DEFAULT_DATA = {
    "cls": (ROOT / "data" / "wordnet" / "supersense", "{}.tsv.gz", "python data/wordnet/prepare.py"),
    "regression": (ROOT / "data" / "stsb", "{}.tsv", "python data/stsb/prepare.py"),
    "ner": (ROOT / "data" / "wnut17", "{}.conll", "python data/wnut17/prepare.py"),
}
SCALARS = ("accuracy", "macro_f1", "macro_precision", "macro_recall", "micro_f1", "mse", "pearson", "spearman", "precision", "recall", "f1",
           "loss", "perplexity", "token_accuracy", "exact_match", "chrf")
# the dev metric that picks the checkpoint, and whether higher is better
METRIC = {"cls": ("accuracy", "max"), "regression": ("pearson", "max"), "ner": ("f1", "max"), "sft": ("loss", "min"), "seq2seq": ("loss", "min")}
TEXT = ("perplexity", "token_accuracy", "exact_match", "chrf")
SHOWN = {"cls": ("accuracy", "macro_f1"), "regression": ("mse", "pearson", "spearman"), "ner": ("precision", "recall", "f1", "accuracy"), "sft": TEXT, "seq2seq": TEXT}
COLUMNS = {"sft": ("prompt", "response"), "seq2seq": ("source", "target")}  # default input and output columns


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=list(TASK_HEADS), default="cls", help="what to learn (default: %(default)s)")
    p.add_argument("--init", help='checkpoint to start from: a directory (train.py\'s run, a Hugging Face model), the name of a shipped one '
                                  '(minilm-mini), or "scratch" (default: minilm-mini for cls, regression and ner; runs/pretrain-decoder for sft, '
                                  'runs/pretrain-encoder-decoder for seq2seq, when present)')
    p.add_argument("--train", help="training file (.csv/.tsv/.jsonl[.gz], .conll/.conllu for ner; default: WordNet supersense for cls, data/stsb for regression, data/wnut17 for ner)")
    p.add_argument("--dev", help="development file: picks the best epoch")
    p.add_argument("--test", help="test file: scored once, at the end")
    p.add_argument("--text-col", default="text", help="column of the text (default: %(default)s)")
    p.add_argument("--text-pair-col", help="column of the second text of a pair (none by default)")
    p.add_argument("--label-col", default="label", help="column of the label or value (default: %(default)s)")
    p.add_argument("--source-col", help="sft / seq2seq: column of the input text (default: prompt / source)")
    p.add_argument("--target-col", help="sft / seq2seq: column of the output text (default: response / target)")
    p.add_argument("--tag-col", default="upos", choices=["upos", "xpos"], help="ner on CoNLL-U files: the tag column (default: %(default)s)")
    p.add_argument("--epochs", type=float, default=2.4, help="passes over the training data; fractions stop part way through the last (default: %(default)s, chosen on the supersense dev set within a five-minute budget)")
    p.add_argument("--patience", type=int, default=0, help="stop after N evaluations without dev improvement (0: never)")
    p.add_argument("--pooling", choices=POOLINGS,
                   help="cls and regression: what the sentence head reads, the [CLS] state (BERT's; the last block then computes "
                        "[CLS] alone) or the mean over the real tokens (default: cls from a pretrained encoder; mean from scratch and for "
                        "--pair-encoding bi, as Sentence-BERT; a checkpoint that already has a sentence head keeps its own)")
    p.add_argument("--pair-encoding", choices=PAIR_ENCODINGS,
                   help="cls and regression on text pairs (--text-pair-col): one sequence \"[CLS] a [SEP] b [SEP]\" (cross, BERT's) or each "
                        "text encoded alone and the two vectors compared (bi, Sentence-BERT's: regression y = w cos(u, v) + b, cls from "
                        "[u; v; |u - v|]; each text keeps a vector of its own). Default: cross; a checkpoint with a sentence head keeps its own")
    p.add_argument("--template",
                   help="cls: prompt-based fine-tuning (LM-BFF, Gao et al. 2021): each text inside this template, e.g. "
                        "\"{text} It was [MASK].\", and the checkpoint's MLM head scores each label's word at the [MASK] "
                        "(no new classifier); needs --verbalizer")
    p.add_argument("--verbalizer",
                   help="--template: each label and its word, one token of the tokenizer each, e.g. 1=great,0=terrible")
    p.add_argument("--freeze-embeddings", action="store_true", help="keep the embeddings as initialised (not trained)")
    p.add_argument("--freeze-layers", type=int, default=0, help="keep the first N blocks as initialised (default: %(default)s)")
    p.add_argument("--layer-lr-decay", type=float, default=1.0, metavar="DECAY",
                   help="layer-wise learning-rate decay: block l of L learns at lr x DECAY^(L + 1 - l), the embeddings at "
                        "lr x DECAY^(L + 1), the head at lr (ELECTRA fine-tunes with 0.8; default: %(default)s, no decay)")
    p.add_argument("--peft", choices=list(peft.METHODS), help="train only a parameter-efficient adapter (and the new head) on a frozen --init checkpoint: "
                        "LoRA, AdaLoRA (Zhang et al. 2023), bottleneck adapters or prefix tuning")
    p.add_argument("--lora-r", type=int, default=8, help="LoRA rank r; for adalora the mean rank per layer at the end (default: %(default)s)")
    p.add_argument("--adalora-init-r", type=int, metavar="R",
                   help="--peft adalora: each layer's rank at the start, pruned to the --lora-r budget over training (default: 1.5 x --lora-r)")
    p.add_argument("--adalora-orth", type=float, default=0.1, metavar="GAMMA",
                   help="--peft adalora: the weight of the penalty ||P^T P - I||^2 + ||Q Q^T - I||^2 (default: %(default)s)")
    p.add_argument("--lora-alpha", type=float, default=16.0, help="LoRA scale alpha: updates are scaled by alpha / r (default: %(default)s)")
    p.add_argument("--lora-dropout", type=float, default=0.1, help="LoRA dropout on the adapted layers' input (default: %(default)s)")
    p.add_argument("--lora-targets", default="q_proj,v_proj", help="comma-separated layers LoRA adapts, from q_proj,k_proj,v_proj,o_proj,fc1,fc2 (default: %(default)s)")
    p.add_argument("--adapter-size", type=int, default=64, help="bottleneck width of each adapter (default: %(default)s)")
    p.add_argument("--prefix-length", type=int, default=16, help="virtual tokens of prefix tuning (default: %(default)s)")
    p.add_argument("--teacher", metavar="CKPT",
                   help="cls, regression, ner: distil from this fine-tuned model (a minilm checkpoint or a Hugging Face directory with "
                        "the same labels): loss = alpha T^2 KL(teacher || student at temperature T) + (1 - alpha) x the task loss "
                        "(MSE to the teacher's values for regression); its outputs are computed once, before training")
    p.add_argument("--distill-temperature", type=float, default=2.0, metavar="T", help="--teacher: the softmax temperature T (default: %(default)s)")
    p.add_argument("--distill-alpha", type=float, default=0.5, metavar="ALPHA",
                   help="--teacher: the weight of the teacher's term, in [0, 1] (1: the teacher alone; default: %(default)s)")
    p.add_argument("--unlabeled", metavar="FILE",
                   help="--teacher, cls and regression: a file of more texts (its --text-col, and --text-pair-col) that the teacher "
                        "labels; they add to the teacher's term only")
    p.add_argument("--sparsity", type=float, default=0.0, metavar="FRACTION",
                   help="gradual magnitude pruning (Zhu & Gupta 2017): raise the fraction of zero weights in the blocks' Linear layers "
                        "to FRACTION along a cubic schedule from 10%% to 75%% of the steps, kept at 0 through every update (default: 0, off)")
    p.add_argument("--sparsity-scope", choices=["global", "layer"], default="global",
                   help="--sparsity: rank weights over all layers or within each (default: %(default)s)")
    p.add_argument("--augment", choices=["eda"],
                   help="cls on single texts: add augmented copies of every training example (EDA, Wei & Zou 2019: WordNet "
                        "synonym replacement, random insertion, swap and deletion, one operation per copy in turn)")
    p.add_argument("--augment-copies", type=int, default=4, metavar="N",
                   help="--augment: copies per example (the paper: 16 for 500 examples, 8 for 2,000, 4 for 5,000 or more; "
                        "default: %(default)s); epochs count passes over the augmented set")
    p.add_argument("--augment-alpha", type=float, default=0.1, metavar="ALPHA",
                   help="--augment: the share of a text's words each copy changes (default: %(default)s)")
    p.add_argument("--synonyms", default=str(SYNONYMS),
                   help="--augment: the WordNet synonym table that python data/wordnet/prepare.py builds (default: %(default)s)")
    p.add_argument("--adversarial", choices=["fgm"],
                   help="cls, regression, ner: adversarial training on the token embeddings (FGM, Miyato et al. 2017): "
                        "loss = L(e) + L(e + epsilon g / ||g||), g = dL/de per example; about 2.5x the compute of a step")
    p.add_argument("--epsilon", type=float, default=0.1,
                   help="--adversarial: the length of each example's perturbation of its token embeddings, all its tokens together "
                        "(default: %(default)s; minilm-mini's rows have norms of about 0.86, and 1.0 drowned the text of SST-2)")
    p.add_argument("--vocab-size", type=int, default=8192, help="tokenizer size when training from scratch (default: %(default)s)")
    p.add_argument("--tokenizer", help="with --init scratch: an existing tokenizer.json (or checkpoint directory) instead of one "
                                       "trained on the training file (whose training is not reproducible bit for bit)")
    add_model_args(p)
    add_plugin_arg(p)
    add_train_args(p, lr=5e-4, batch_size=64, seq_len=64)
    return p


def parse_args(argv=None):
    load_plugins(sys.argv[1:] if argv is None else argv)  # before the parser: their names are among its choices
    p = build_parser()
    args = p.parse_args(argv)
    check_train_flags(p, args)
    check_positive(p, args, "epochs", "vocab_size", "lora_r", "adapter_size", "prefix_length")
    if args.peft and (args.freeze_embeddings or args.freeze_layers):
        p.error("--peft already freezes the whole backbone; drop --freeze-embeddings / --freeze-layers")
    if (args.adalora_init_r is not None or args.adalora_orth != p.get_default("adalora_orth")) and args.peft != "adalora":
        p.error("--adalora-init-r and --adalora-orth apply with --peft adalora only")
    args.adalora_init_r = args.adalora_init_r or -(-3 * args.lora_r // 2)
    if args.adalora_init_r < args.lora_r:
        p.error(f"--adalora-init-r {args.adalora_init_r} is below the final mean rank --lora-r {args.lora_r}")
    if args.peft and args.init == "scratch":
        p.error("--peft adapts a pretrained model: give --init CHECKPOINT")
    if args.tokenizer and args.init != "scratch":
        p.error("--tokenizer applies with --init scratch only: a checkpoint brings its own tokenizer")
    distilling = [f for f in ("unlabeled",) if getattr(args, f)] + [f for f in ("distill_temperature", "distill_alpha") if getattr(args, f) != p.get_default(f)]
    if distilling and not args.teacher:
        p.error(f"--{distilling[0].replace('_', '-')} applies with --teacher only")
    if args.teacher:
        try:
            distill.check_settings(args.distill_alpha, args.distill_temperature)
        except ValueError as e:
            p.error(str(e))
        if args.task not in distill.DISTILLED_TASKS:
            p.error(f"--teacher applies to --task {', '.join(distill.DISTILLED_TASKS)}, not {args.task}")
        if args.unlabeled and args.task == "ner":
            p.error("--unlabeled applies to cls and regression (ner would need tokenized sentences without tags)")
    augmenting = [f for f in ("augment_copies", "augment_alpha", "synonyms") if getattr(args, f) != p.get_default(f)]
    if augmenting and not args.augment:
        p.error(f"--{augmenting[0].replace('_', '-')} applies with --augment only")
    if args.augment and (args.task != "cls" or args.text_pair_col):
        p.error("--augment eda edits single texts: it applies to --task cls without --text-pair-col")
    if args.augment and args.augment_copies < 1:
        p.error(f"--augment-copies must be >= 1, got {args.augment_copies}")
    if args.augment and not 0.0 < args.augment_alpha < 1.0:
        p.error(f"--augment-alpha must lie in (0, 1), got {args.augment_alpha}")
    if args.epsilon != p.get_default("epsilon") and not args.adversarial:
        p.error("--epsilon applies with --adversarial only")
    if args.adversarial and args.task in TASK_ARCH:
        p.error(f"--adversarial applies to --task cls, regression and ner, not {args.task}")
    if args.adversarial and not args.epsilon > 0:
        p.error(f"--epsilon must be > 0, got {args.epsilon}")
    if not 0.0 <= args.sparsity < 1.0:
        p.error(f"--sparsity must lie in [0, 1), got {args.sparsity}")
    if args.freeze_layers < 0:
        p.error(f"--freeze-layers must be >= 0, got {args.freeze_layers}")
    if not 0 < args.layer_lr_decay <= 1:
        p.error(f"--layer-lr-decay must lie in (0, 1] (1: no decay), got {args.layer_lr_decay}")
    if args.layer_lr_decay < 1 and args.task == "seq2seq":
        p.error("--layer-lr-decay applies to one stack of blocks (cls, regression, ner, sft), not to an encoder-decoder")
    if args.train is None:
        if args.task not in DEFAULT_DATA:
            p.error(f"--task {args.task} has no default data: give --train (and --dev, --test)")
        folder, name, recipe = DEFAULT_DATA[args.task]
        if not (folder / name.format("train")).exists():
            p.error(f"--task {args.task} without --train reads {folder}, which is missing its files; run `{recipe}` first")
        args.train, args.dev, args.test = (str(folder / name.format(s)) if (folder / name.format(s)).exists() else None for s in ("train", "dev", "test"))
        if args.task == "regression" and args.text_pair_col is None:
            args.text_pair_col = "text_pair"  # the recipe's pair column
    if bool(args.template) != bool(args.verbalizer):
        p.error("--template and --verbalizer come together: the template's [MASK] is where each label's word is scored")
    if args.template:
        if args.task != "cls" or args.text_pair_col or args.pair_encoding:
            p.error("--template applies to --task cls on single texts (no --text-pair-col or --pair-encoding)")
        try:
            check_template(args.template)
            parse_verbalizers(args.verbalizer, "--verbalizer")
        except ValueError as e:
            p.error(str(e))
    if args.pair_encoding == "bi" and (args.task not in ("cls", "regression") or args.text_pair_col is None):
        p.error("--pair-encoding bi compares the two texts of a pair: it needs --task cls or regression and --text-pair-col")
    if args.task in COLUMNS:
        args.source_col = args.source_col or COLUMNS[args.task][0]
        args.target_col = args.target_col or COLUMNS[args.task][1]
    args.out = args.out or str(ROOT / "runs" / f"finetune-{args.task}")
    return args


def default_pooling(pair_encoding: str, scratch: bool) -> str:
    """The sentence head's input when neither --pooling nor a fine-tuned checkpoint says: from a
    pretrained encoder the [CLS] state (BERT's), which lets the last block compute [CLS] alone (about
    a sixth of a step less on minilm-mini, the same dev accuracy as the mean: bench/results/minilm_mini.md);
    a bi-encoder's mean, as Sentence-BERT; and the mean from scratch, where a small encoder learns
    to read its [CLS] state only slowly (tests/test_adversarial.py: 47% dev with it, 4 topics)."""
    return "mean" if pair_encoding == "bi" or scratch else "cls"


def default_checkpoint(task: str):
    """What a run without --init starts from: minilm's shipped encoder for the encoder tasks, the
    run of `train.py` for sft and seq2seq (no decoder is shipped yet); None when there is none."""
    if task not in TASK_ARCH:
        return shipped(SHIPPED_ENCODER)
    folder = DEFAULT_INIT[task]
    return folder if (folder / "config.json").exists() else None


def read_task_file(path, args):
    """The examples of one file of the task: tagged sentences for ner, rows for the others."""
    if args.task in TASK_ARCH:
        return read_examples(path, args.source_col, None, args.target_col)
    if args.task == "ner":
        return read_conll(path, args.tag_col)
    return read_examples(path, args.text_col, args.text_pair_col, args.label_col)


def targets(examples, args, labels):
    """Label ids (cls), tag ids per word (ner), float values (regression) or None (sft, seq2seq,
    whose targets are texts); errors name file, line and field."""
    if args.task in TASK_ARCH:
        return None
    if args.task == "ner":
        return tag_ids(examples, labels)
    if args.task == "cls":
        return label_ids(examples, labels)
    values = []
    for e in examples:
        try:
            values.append(float(e.label))
        except ValueError:
            raise ValueError(f"{e.where}: field {args.label_col!r} is {e.label!r}, not a number") from None
        if not math.isfinite(values[-1]):
            raise ValueError(f"{e.where}: field {args.label_col!r} is {e.label!r}, not a finite number")
    return values


def read_split(path, args, labels=None):
    """(examples, targets) of a dev or test file."""
    examples = read_task_file(path, args)
    return examples, targets(examples, args, labels)


def read_train(args):
    """(examples, label set, targets) of the training file; the label set is read from it."""
    examples = read_task_file(args.train, args)
    labels = tag_set(examples) if args.task == "ner" else label_set(examples) if args.task == "cls" else []
    if args.task == "cls" and len(labels) < 2:
        raise ValueError(f"{args.train}: every row has the label {labels[0]!r} in column {args.label_col!r}; a classifier needs two labels at least")
    return examples, labels, targets(examples, args, labels)


def texts_of(examples, with_outputs: bool = False):
    """The raw text of the examples, to train a tokenizer on (with the output texts of sft / seq2seq)."""
    for e in examples:
        if hasattr(e, "words"):  # a tagged sentence
            yield " ".join(e.words)
        else:
            yield from (t for t in (e.text, e.pair, e.label if with_outputs else None) if t is not None)


def prompt_fields(args, tokenizer, labels: list[str]) -> dict:
    """The config fields of prompt-based fine-tuning: the template and each label's token id, in label
    order ({} without --template). Every label needs a word, and every word must be one token."""
    if not args.template:
        return {}
    words = parse_verbalizers(args.verbalizer, "--verbalizer")
    missing, unknown = [y for y in labels if y not in words], sorted(set(words) - set(labels))
    if missing or unknown:
        raise ValueError(f"--verbalizer {args.verbalizer!r}: " + "; ".join(
            ([f"no word for the label(s) {', '.join(missing)} of {args.train}"] if missing else []) +
            ([f"label(s) {', '.join(unknown)} are not in {args.train}"] if unknown else [])))
    ids = []
    for y in labels:
        pieces = tokenizer.encode(words[y], add_special=False)
        if len(pieces) != 1:
            raise ValueError(f"--verbalizer: the word {words[y]!r} of label {y} is {len(pieces)} tokens of this tokenizer "
                             f"({' '.join(tokenizer.id_to_token(i) for i in pieces)}); each label's word must be one token")
        ids.append(pieces[0])
    if len(set(ids)) != len(ids):
        raise ValueError(f"--verbalizer {args.verbalizer!r}: two labels have the same word")
    return {"prompt": args.template, "verbalizer_ids": ids}


def prompting(args, tokenizer, labels: list[str]) -> dict:
    """prompt_fields, or the fields that clear a fine-tuned prompt checkpoint's own; exits on a bad --verbalizer."""
    try:
        return prompt_fields(args, tokenizer, labels) or {"prompt": "", "verbalizer_ids": []}
    except ValueError as e:
        sys.exit(f"error: {e}")


def task_data(args, config, tokenizer, examples, y, batch_size, seed=0):
    if args.task == "sft":
        return SFTData(examples, tokenizer, args.seq_len, batch_size, seed)
    if args.task == "seq2seq":
        return Seq2SeqData(examples, tokenizer, args.seq_len, batch_size, seed, config.decoder_start_id)
    if args.task == "ner":
        return TaggingData(examples, tokenizer, y, args.seq_len, batch_size, seed)
    return ClassificationData(examples, tokenizer, y, args.seq_len, batch_size, seed, config.pair_encoding, config.prompt)


def teach(args, examples, train_data, labels, device, show_progress: bool = True) -> None:
    """The teacher's outputs for every training example, computed once and attached to the batches."""
    import time

    import minilm

    start_time = time.perf_counter()
    try:
        teacher = minilm.from_pretrained(args.teacher).to(device)
        teacher_tokenizer = Tokenizer.load(resolve_checkpoint(args.teacher))
        distill.check_teacher(args.task, teacher.config, labels, args.teacher)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}" if str(e).startswith("--teacher") else f"error: --teacher {e}")
    with autocast(args.dtype, device):  # the run's precision, as its evaluations (bf16: 1.7x faster, 1 argmax in 6,000 differs)
        outputs = distill.teacher_outputs(args.task, teacher, teacher_tokenizer, examples, min(args.seq_len, teacher.config.max_seq_len),
                                          device, progress="teacher" if show_progress else None)
    if args.task == "ner":
        outputs = [distill.token_teacher(wi, o, len(labels)) for wi, o in zip(train_data.word_index, outputs)]
    train_data.teacher = outputs
    print(f"teacher {args.teacher}: {len(examples):,} examples scored in {time.perf_counter() - start_time:.0f}s ({args.dtype}), "
          f"T = {args.distill_temperature:g}, alpha = {args.distill_alpha:g}")


def main(argv=None):
    args = parse_args(argv)
    seed_everything(args.seed)
    world, device = start(args)

    # -- data ----------------------------------------------------------------------------------------
    try:
        train_examples, labels, train_y = read_train(args)
        dev = read_split(args.dev, args, labels) if args.dev else None
        test = read_split(args.test, args, labels) if args.test else None
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    unit = "sentences" if args.task == "ner" else "examples"
    print(f"train {args.train}: {len(train_examples):,} {unit}" + (f", {len(labels)} labels" if labels else ""))
    if args.augment:
        try:
            synonyms = augment.load_synonyms(args.synonyms)
        except (ValueError, FileNotFoundError) as e:
            sys.exit(f"error: --synonyms {e}")
        train_examples = augment.augment(train_examples, args.augment_copies, args.augment_alpha, synonyms, args.seed)
        train_y = targets(train_examples, args, labels)
        print(f"EDA: {args.augment_copies} copies of each (alpha {args.augment_alpha:g}): {len(train_examples):,} training examples")
    if args.unlabeled:  # more text for the teacher to label: no label of its own (ignored by the task's term)
        try:
            extra = read_examples(args.unlabeled, args.text_col, args.text_pair_col, label_col=None)
        except (ValueError, FileNotFoundError) as e:
            sys.exit(f"error: --unlabeled {e}")
        train_examples = train_examples + extra
        train_y = train_y + [IGNORE_INDEX if args.task == "cls" else float("nan")] * len(extra)
        print(f"unlabeled {args.unlabeled}: {len(extra):,} examples, for the teacher's term only")

    # -- model and tokenizer ----------------------------------------------------------------------------
    init, arch = args.init, TASK_ARCH.get(args.task, "encoder")
    default_init = default_checkpoint(args.task)
    if init is None:
        init = str(default_init) if default_init is not None else "scratch"
        if init == "scratch":
            where = DEFAULT_INIT.get(args.task, "a shipped encoder")
            print(f"notice: no pretrained checkpoint at {where} (run `python train.py --arch {arch}` to make one); training from scratch")
        else:
            print(f"starting from {init}" + (" (minilm's shipped encoder; --init scratch trains from scratch)" if arch == "encoder" else ""))
    head = "mlm" if args.template else TASK_HEADS[args.task]  # prompt-based: the MLM head scores the labels' words
    n_labels = len(labels)
    if init == "scratch":
        kind = "wordpiece" if arch == "encoder" else "bpe"
        # one tokenizer for all ranks: rank 0 trains it and sends its JSON
        if args.tokenizer:
            try:
                trained = Tokenizer.load(args.tokenizer) if world.main else None
            except (FileNotFoundError, ValueError) as e:
                sys.exit(f"error: --tokenizer {args.tokenizer}: {e}")
        else:
            trained = Tokenizer.train(texts_of(train_examples, args.task in TASK_ARCH), kind=kind, vocab_size=args.vocab_size) if world.main else None
        tokenizer = Tokenizer.from_json(distributed.broadcast_json(trained.to_json() if world.main else None, world))
        config = from_preset(
            args.preset, arch=arch, head=head, n_labels=n_labels, labels=labels, vocab_size=tokenizer.vocab_size,
            max_seq_len=args.seq_len, pooling=args.pooling or default_pooling(args.pair_encoding or "cross", scratch=True), pair_encoding=args.pair_encoding or "cross",
            **{"dropout": 0.0, "attn_dropout": 0.0, **model_overrides(args), **prompting(args, tokenizer, labels)}
        )
        init_path = None
    else:
        init_path, tokenizer, base = init_checkpoint(init, args, "--init scratch")
        dropout = args.dropout if args.dropout is not None else 0.0
        if args.task in TASK_ARCH and base.arch != arch:
            sys.exit(f"error: --task {args.task} fine-tunes a {arch} model; --init {init} is {'an' if base.arch[0] in 'aeiou' else 'a'} {base.arch} checkpoint "
                     f"(make one with `python train.py --arch {arch}`)")
        try:
            sentence_head = base.head in ("cls", "regression")  # a fine-tuned checkpoint keeps how it pools and reads pairs
            pair_encoding = args.pair_encoding or (base.pair_encoding if sentence_head else "cross")
            config = base.replace(head=head, n_labels=n_labels, labels=labels, dropout=dropout, attn_dropout=dropout,
                                  pooling=args.pooling or (base.pooling if sentence_head else default_pooling(pair_encoding, scratch=False)),
                                  pair_encoding=pair_encoding,
                                  attn_impl=args.attn_impl or base.attn_impl, loss_impl=args.loss_impl or base.loss_impl,
                                  **prompting(args, tokenizer, labels))
        except ValueError as e:
            sys.exit(f"error: --init {init}: a {base.arch} checkpoint cannot take a {head} head ({e})")
    try:
        model, new = init_model(config, init_path)
    except ValueError as e:
        sys.exit(f"error: --init {init}: {e}")
    if init_path is not None:
        print(f"initialised from {init_path}; new: {', '.join(new) if new else 'nothing'}")
    if config.pair_encoding == "bi" and args.task == "regression" and (init_path is None or "classifier.scale" in new):
        model.classifier.fit_range(min(train_y), max(train_y))  # cos 0 -> the lowest label, cos 1 -> the highest
    try:
        if args.peft:
            if init_path is None:
                sys.exit(f"error: --peft adapts a pretrained model, and there is none at {default_init}: give --init CHECKPOINT")
            spec = peft.PeftSpec(args.peft, str(init_path.resolve()), args.adalora_init_r if args.peft == "adalora" else args.lora_r,
                                 args.lora_alpha, args.lora_dropout,
                                 [t.strip() for t in args.lora_targets.split(",") if t.strip()], args.adapter_size,
                                 args.prefix_length, trainable=new, target_r=args.lora_r if args.peft == "adalora" else None)
            peft.apply(model, spec)
        trainable, total = freeze(model, args.freeze_embeddings, args.freeze_layers)
    except ValueError as e:
        sys.exit(f"error: {e}")
    print(f"model: {config.arch} with a {head} head, {total:,} parameters, {trainable:,} trained ({100 * trainable / total:.1f}%), device {device}")
    compile_if_asked(model, args)

    try:  # a tokenizer without a token the task's batches need (SFT and seq2seq end targets with EOS) is named here
        train_data = task_data(args, config, tokenizer, train_examples, train_y, args.batch_size * args.grad_accum * world.size, args.seed)
        dev_data = task_data(args, config, tokenizer, *dev, 128) if dev else None
        test_data = task_data(args, config, tokenizer, *test, 128) if test else None
    except ValueError as e:
        sys.exit(f"error: {args.init}: {e}")

    loss_fn, targets_fn = task_loss(args.task), task_targets(args.task)
    if args.teacher:
        teach(args, train_examples, train_data, labels, device, show_progress=world.main)
        loss_fn, targets_fn = distill.distillation_loss(args.task, args.distill_alpha, args.distill_temperature), distill.distillation_targets(args.task)
    if args.adversarial:
        loss_fn, targets_fn = adversarial.fgm_loss(loss_fn, args.epsilon), adversarial.fgm_targets(targets_fn)
        print(f"adversarial training: FGM on the token embeddings, epsilon {args.epsilon:g}")

    # -- loop ----------------------------------------------------------------------------------------------
    max_steps = args.max_steps or max(1, int(args.epochs * train_data.steps_per_epoch))
    metric, mode = METRIC[args.task]

    dev_reports = {}  # step: the whole dev report of the weights of that step

    def evaluate(m):
        if dev_data is None:
            return {}
        report = dev_reports[trainer.step] = evaluate_task(args.task, m, dev_data, labels, device)
        return {f"dev_{k}": v for k, v in report.items() if k in SCALARS}

    settings = train_args(
        args, max_steps, eval_every=args.eval_every or min(max_steps, train_data.steps_per_epoch),
        patience=args.patience, metric=f"dev_{metric}", mode=mode,
        # gradual pruning and AdaLoRA keep the last weights: an earlier best is less sparse, or over the rank budget
        keep_best=dev_data is not None and not args.sparsity and args.peft != "adalora",
    )
    print(f"{max_steps:,} steps of {global_batch(args, world)} ({max_steps / train_data.steps_per_epoch:.2f} epochs), peak lr {args.lr:g}")
    pruner = None
    if args.sparsity:
        pruner = prune.GradualPruner(model, args.sparsity, begin=int(0.1 * max_steps), end=int(0.75 * max_steps),
                                     every=max(1, max_steps // 100), scope=args.sparsity_scope)
        print(f"gradual pruning to {args.sparsity:.0%} zeros ({args.sparsity_scope}), steps {pruner.begin:,} to {pruner.end:,}")
    allocator = None
    if args.peft == "adalora":
        allocator = RankAllocator(model, args.lora_r, max_steps, t_init=int(0.1 * max_steps), t_final=int(0.3 * max_steps), every=max(1, max_steps // 200))
        loss_fn, targets_fn = orthogonality_loss(loss_fn, args.adalora_orth), orthogonality_targets(targets_fn)
        print(f"AdaLoRA: rank {args.adalora_init_r} per layer, pruned to {allocator.bT:,} triplets in all "
              f"(mean rank {args.lora_r}) from step {allocator.t_init:,} to {max_steps - allocator.t_final:,}")
    hooks = [h.after_step for h in (pruner, allocator) if h is not None]
    trainer = Trainer(model, tokenizer, train_data, loss_fn, targets_fn, evaluate, settings, device=device, world=world,
                      after_step=(lambda step: [hook(step) for hook in hooks]) if hooks else None)
    try:
        fitted = trainer.fit()
    except TrainingStopped as e:
        print(f"{'error: ' if e.code == 1 else ''}{e}", file=sys.stderr)
        sys.exit(e.code)

    # -- report ----------------------------------------------------------------------------------------------
    results = {"task": args.task, "init": str(init_path) if init_path else "scratch", "labels": labels}
    if pruner is not None:
        results["sparsity"] = prune.sparsity_report(model)
        print(f"sparsity: {results['sparsity']['all']:.1%} of the blocks' Linear weights are 0")
    if allocator is not None:
        results["adalora"] = allocator.report()
        print(f"AdaLoRA ranks: {', '.join(map(str, results['adalora']['ranks'].values()))} "
              f"({results['adalora']['kept_parameters']:,} parameters in the kept triplets)")
    for name, data in (("dev", dev_data), ("test", test_data)):
        if name == "dev" and fitted["weights_step"] in dev_reports:  # the final weights were scored on dev during training
            results[name] = dev_reports[fitted["weights_step"]]
        elif data is not None and world.evaluates:
            results[name] = trainer.inference(lambda m: evaluate_task(args.task, m, data, labels, device))
    distributed.teardown()
    if not world.main:
        return results
    atomic_write_json(Path(args.out) / "metrics.json", results)
    for name in ("dev", "test"):
        if name in results:
            r = results[name]
            print(f"{name}: " + ", ".join(f"{k} {r[k]:.4f}" for k in SHOWN[args.task]))
    print(f"saved {args.out} (metrics in {Path(args.out) / 'metrics.json'})")
    return results


if __name__ == "__main__":
    main()
