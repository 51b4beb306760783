"""Learning: the one training loop and what it is given to learn.

    trainer.py       the loop: batches -> loss -> backward -> hand-written optimizer step; evaluation,
                     checkpoints and resume, bf16 / fp16, gradient accumulation, torchrun
    pretraining.py   pretraining losses per objective: MLM, NSP, causal LM, span corruption
    electra.py       replaced-token detection: a generator and the discriminator we keep
    finetuning.py    fine-tuning tasks: a head on a backbone, its loss and its evaluation
    text_tasks.py    sft and seq2seq: loss on the response, generation-based evaluation
    distill.py       knowledge distillation from a teacher's outputs
    prune.py         structured and unstructured pruning of a fine-tuned model
    distributed.py   torchrun: data parallel and FSDP

May import everything below it: the model, data, optim, peft, checkpoint, tokenizer, and
minilm.inference (evaluation generates and predicts). `tests/test_imports.py` keeps it so.
"""
