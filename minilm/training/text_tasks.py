"""The text-to-text fine-tuning tasks, sft (decoder) and seq2seq (encoder-decoder): their loss
(cross-entropy on the output tokens only) and their evaluation, teacher-forced (loss, perplexity,
token accuracy) and by greedy generation from the input alone (exact match and chrF)."""

from __future__ import annotations

import math

import torch

from minilm.inference.generate import generate, pad_prompts, until_eos
from minilm.metrics import chrf
from minilm.objectives import IGNORE_INDEX, cross_entropy_sum


def output_logits(model, batch):
    """Scores of every output position: (B, T, V)."""
    if "decoder_input_ids" in batch:
        return model(batch["input_ids"], batch["decoder_input_ids"], batch["attention_mask"], batch["decoder_attention_mask"])
    return model(batch["input_ids"], batch["attention_mask"])


def text_loss(model, batch) -> dict:
    if "decoder_input_ids" not in batch:  # a decoder: its LM head sums the loss (in chunks, with loss_impl "chunked")
        return {"lm": model.lm_loss(batch["input_ids"], batch["labels"], batch["attention_mask"])}
    return {"lm": cross_entropy_sum(output_logits(model, batch), batch["labels"])}


@torch.no_grad()
def generate_outputs(model, data, device="cpu", batch_size: int = 32) -> list[str]:
    """Greedy outputs for every example's input (prompt or source), in the data's order, cut at [EOS]."""
    model.eval()
    tk, limit = data.tokenizer, model.config.max_seq_len
    seq2seq = model.config.arch == "encoder-decoder"
    out = [None] * len(data)
    order = sorted(range(len(data)), key=lambda i: len(data.prompts[i]))  # similar lengths together
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        prompts = [data.prompts[i] for i in index]
        longest_answer = max(len(data.references[i]) for i in index)  # characters: a generous bound on tokens
        ids, mask = pad_prompts(prompts, tk.fill_id, seq2seq)
        new = min(longest_answer + 2, limit if seq2seq else limit - ids.shape[1] + 1)
        tokens = generate(model, ids.to(device), mask.to(device), max_new_tokens=max(new, 1), greedy=True,
                          eos_id=tk.eos_id, pad_id=tk.fill_id, decoder_start_id=model.config.decoder_start(tk) if seq2seq else None)
        for row, i in enumerate(index):
            out[i] = tk.decode(until_eos(tokens[row].tolist(), tk.eos_id)).strip()
    return out


@torch.no_grad()
def evaluate_text_task(model, data, device="cpu") -> dict:
    model.eval()
    total, count, correct = 0.0, 0, 0
    for _, batch in data.by_length():
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = output_logits(model, batch)
        loss, n = cross_entropy_sum(logits, batch["labels"])
        total, count = total + float(loss), count + n
        correct += int(((logits.argmax(-1) == batch["labels"]) & (batch["labels"] != IGNORE_INDEX)).sum())
    outputs = generate_outputs(model, data, device)
    references = [r.strip() for r in data.references]
    mean = total / max(count, 1)
    return {
        "loss": mean,
        "perplexity": math.exp(min(mean, 50.0)),
        "token_accuracy": correct / max(count, 1),
        "exact_match": sum(o == r for o, r in zip(outputs, references)) / max(len(references), 1),
        "chrf": chrf(outputs, references),
        "n": len(references),
        "examples": [{"output": o, "reference": r} for o, r in list(zip(outputs, references))[:20]],
    }
