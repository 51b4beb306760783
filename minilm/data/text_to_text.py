"""Text-to-text fine-tuning data: supervised fine-tuning of a decoder (sft) and source -> target
pairs for an encoder-decoder (seq2seq). Both read task files (CSV, TSV, JSONL) whose two columns
hold the input and the output text (`Example.text` and `Example.label`).

sft (decoder only): the model reads "prompt\\n" then the response and [EOS] as one sequence and
is trained on the response alone (Ouyang et al. 2022; the prompt's positions carry IGNORE_INDEX):

    tokens   p_1 .. p_m  r_1 .. r_n  [EOS]
    inputs   p_1 .. p_m  r_1 .. r_n             (B, T)
    labels   -   ..  r_1 r_2 .. [EOS]           the target at position t is token t + 1

seq2seq (encoder-decoder): the encoder reads the source and [EOS]; the decoder reads [BOS] and
the target shifted right, and predicts the target and [EOS] (teacher forcing, as in T5 and BART).

Too long a prompt or source loses its start (the end is nearest to the answer); too long a
response or target loses its end.
"""

from __future__ import annotations

from minilm.data.pretrain import pad
from minilm.data.tasks import TaskBatches
from minilm.objectives import IGNORE_INDEX

PROMPT_END = "\n"  # what separates the prompt from the response; `infer.py generate` prompts end with it too


class SFTData(TaskBatches):
    def __init__(self, examples, tokenizer, max_len: int, batch_size: int, seed: int = 0):
        tokenizer.require(["eos"], "a generated answer (it ends with EOS)")
        self.tokenizer, self.batch_size, self.seed = tokenizer, batch_size, seed
        self.prompts, self.references = [], [e.label for e in examples]
        self.ids, self.token_labels = [], []
        for e in examples:
            prompt = tokenizer.encode(e.text + PROMPT_END, add_special=False)[-(max_len // 2):]  # keep the end
            response = [*tokenizer.encode(e.label, add_special=False), tokenizer.eos_id][: max_len + 1 - len(prompt)]
            sequence = prompt + response
            self.ids.append(sequence[:-1])
            self.token_labels.append([IGNORE_INDEX] * (len(prompt) - 1) + response)
            self.prompts.append(prompt)
        self._epoch_cache = {}

    def _collate(self, index) -> dict:
        input_ids = pad([self.ids[i] for i in index], self.tokenizer.fill_id)  # (B, T), right-padded
        return {
            "input_ids": input_ids,
            "attention_mask": pad([[1] * len(self.ids[i]) for i in index], 0, input_ids.shape[1]),
            "labels": pad([self.token_labels[i] for i in index], IGNORE_INDEX, input_ids.shape[1]),  # (B, T)
        }


class Seq2SeqData(TaskBatches):
    def __init__(self, examples, tokenizer, max_len: int, batch_size: int, seed: int = 0, decoder_start: int | None = None):
        """`decoder_start`: the first token of the decoder's input (the model's config.decoder_start_id,
        BART's </s>); None: the tokenizer's BOS."""
        tokenizer.require((["bos"] if decoder_start is None else []) + ["eos"], "an encoder-decoder's output (it runs from BOS to EOS)")
        self.tokenizer, self.batch_size, self.seed = tokenizer, batch_size, seed
        eos, bos = tokenizer.eos_id, (tokenizer.bos_id if decoder_start is None else decoder_start)
        self.references = [e.label for e in examples]
        self.ids = [[*tokenizer.encode(e.text, add_special=False)[-(max_len - 1):], eos] for e in examples]  # sources
        self.targets = [[*tokenizer.encode(e.label, add_special=False)[: max_len - 1], eos] for e in examples]
        self.decoder_inputs = [[bos, *t[:-1]] for t in self.targets]  # shifted right
        self.prompts = self.ids
        self._epoch_cache = {}

    def _collate(self, index) -> dict:
        pad_id = self.tokenizer.fill_id
        input_ids = pad([self.ids[i] for i in index], pad_id)  # (B, S)
        labels = pad([self.targets[i] for i in index], IGNORE_INDEX)  # (B, T)
        return {
            "input_ids": input_ids,
            "attention_mask": pad([[1] * len(self.ids[i]) for i in index], 0, input_ids.shape[1]),
            "decoder_input_ids": pad([self.decoder_inputs[i] for i in index], pad_id, labels.shape[1]),
            "decoder_attention_mask": (labels != IGNORE_INDEX).long(),
            "labels": labels,
        }
