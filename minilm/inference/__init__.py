"""Using a trained model: what `infer.py` and the HTTP service answer.

    generate.py       greedy and sampled decoding with the KV cache, streaming
    beam.py           beam search
    task_outputs.py   a task model's outputs over batches: logits, values, word tags
    predict.py        texts in, JSON-ready answers out: generations, labels, entities, masked words,
                      sentence embeddings
    quantize.py       dynamic int8 for CPU inference
    serve.py          the HTTP service (127.0.0.1 by default, bounded requests)

May import the model, data, checkpoint and tokenizer; never minilm.training, which sits above it.
`tests/test_imports.py` keeps it so.
"""
