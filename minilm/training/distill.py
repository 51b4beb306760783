"""Knowledge distillation (Hinton et al. 2015): a student fine-tuned on a teacher's soft outputs
beside the labels.

    cls, ner:    L = alpha T^2 KL(softmax(z_t / T) || softmax(z_s / T)) + (1 - alpha) CE(z_s, y)
    regression:  L = alpha (y_s - y_t)^2 + (1 - alpha) (y_s - y)^2

z_s, z_t are the student's and the teacher's logits (per example for cls, per word for ner, on
the word's first subword), T the temperature: T > 1 softens both distributions so that the
teacher's ranking of the wrong classes (its "dark knowledge") carries weight, and T^2 keeps the
gradient of the soft term on the scale of the hard one as T grows. Each term is a mean over its
own targets: the examples (words) that have a label for the hard term, those the teacher scored
for the soft one. Rows without a label (unlabeled text the teacher labels, `finetune.py
--unlabeled`) add to the soft term only.

The teacher may read text with its own tokenizer: its outputs are computed once, before training,
per example (per word for ner), and travel with the student's batches as `batch["teacher"]`, so a
student epoch never pays the teacher's forward pass again.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from minilm.data.tagging import TaggingData
from minilm.data.tasks import ClassificationData
from minilm.inference.task_outputs import batches_by_length, forward_task, predict
from minilm.objectives import IGNORE_INDEX
from minilm.training.finetuning import TASK_HEADS

DISTILLED_TASKS = ("cls", "regression", "ner")


def check_teacher(task: str, teacher_config, labels: list[str], where: str) -> None:
    """The teacher answers the student's task: the same head and, for cls and ner, the same labels
    in the same order (its logits are read position by position)."""
    if task not in DISTILLED_TASKS:
        raise ValueError(f"--teacher: distillation applies to --task {', '.join(DISTILLED_TASKS)}, not {task}")
    head = TASK_HEADS[task]
    if teacher_config.head != head:
        raise ValueError(f"--teacher {where}: it has a {teacher_config.head!r} head; --task {task} needs a {head!r} one (fine-tune the teacher on the task first)")
    if task != "regression" and list(teacher_config.labels) != list(labels):
        raise ValueError(f"--teacher {where}: its labels {list(teacher_config.labels)} do not match the student's {list(labels)} "
                         "(names and order must agree: fine-tune the teacher on the same training file)")


@torch.no_grad()
def teacher_outputs(task: str, teacher, tokenizer, examples, max_len: int, device="cpu", progress: str | None = None):
    """The teacher's outputs for every example, in order: logits (N, L) for cls, values (N,) for
    regression, for ner a list of per-word logits (n_words, L) (NaN rows for words its positions cut off).
    `progress`: the name of a progress bar over the batches (none when None)."""
    teacher.eval()
    if task != "ner":
        data = ClassificationData(examples, tokenizer, None, max_len, 128, pair_encoding=teacher.config.pair_encoding, prompt=teacher.config.prompt)
        return predict(teacher, data, device, progress)
    data = TaggingData(examples, tokenizer, [[0] * len(s.words) for s in examples], max_len, 128)
    out = [None] * len(examples)
    for index, batch in batches_by_length(data, progress):
        logits = forward_task(teacher, {k: v.to(device) for k, v in batch.items()}).float().cpu()  # (B, T, L)
        for row, i in enumerate(index):
            words = np.full((len(examples[i].words), logits.shape[-1]), np.nan, dtype=np.float32)
            wi = data.word_index[i]
            for k, w in enumerate(wi):
                if w is not None and (k == 0 or wi[k - 1] != w):
                    words[w] = logits[row, k].numpy()
            out[i] = words
    return out


def token_teacher(word_index: list, word_logits: np.ndarray, n_labels: int) -> np.ndarray:
    """Per-word teacher logits placed on the student's subwords: (T, L), the first subword of each
    word holding its word's logits, NaN everywhere else (no soft target there)."""
    out = np.full((len(word_index), n_labels), np.nan, dtype=np.float32)
    for k, w in enumerate(word_index):
        if w is not None and (k == 0 or word_index[k - 1] != w):
            out[k] = word_logits[w]
    return out


def distillation_loss(task: str, alpha: float, temperature: float):
    """The trainer's loss_fn for a distilled task: {hard part: (sum, count), "kd": (sum, count)}."""
    T = temperature

    def soft(z_s, z_t):  # (N, L), (N, L) -> T^2 sum_n KL(p_t || p_s)
        return T * T * F.kl_div(F.log_softmax(z_s / T, dim=-1), F.log_softmax(z_t / T, dim=-1), log_target=True, reduction="sum")

    def loss_fn(model, batch):
        out = forward_task(model, batch).float()
        teacher, labels = batch["teacher"].float(), batch["labels"]
        if task == "regression":  # out (B,), teacher (B,), labels (B,) NaN where unlabeled
            labelled = torch.isfinite(labels)
            hard = ((out[labelled] - labels[labelled].float()) ** 2).sum()
            return {"mse": ((1 - alpha) * hard, int(labelled.sum())), "kd": (alpha * ((out - teacher) ** 2).sum(), len(out))}
        if task == "ner":  # out (B, T, L), teacher (B, T, L) NaN off first subwords, labels (B, T)
            out, teacher, labels = out.flatten(0, 1), teacher.flatten(0, 1), labels.flatten()
        scored = torch.isfinite(teacher).all(-1)
        hard = F.cross_entropy(out, labels, ignore_index=IGNORE_INDEX, reduction="sum")
        return {"ce": ((1 - alpha) * hard, int((labels != IGNORE_INDEX).sum())),
                "kd": (alpha * soft(out[scored], teacher[scored]), int(scored.sum()))}

    return loss_fn


def distillation_targets(task: str):
    """The trainer's targets: labelled examples (words) for the hard part, teacher-scored ones for "kd"."""
    def targets(batch):
        labels, teacher = batch["labels"], batch["teacher"]
        if task == "regression":
            return {"mse": torch.isfinite(labels).sum(), "kd": len(labels)}
        scored = torch.isfinite(teacher).all(-1)
        return {"ce": (labels != IGNORE_INDEX).sum(), "kd": scored.sum()}

    return targets


def check_settings(alpha: float, temperature: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"--distill-alpha must lie in [0, 1], got {alpha}")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"--distill-temperature must be a positive number, got {temperature}")
