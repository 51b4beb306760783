"""Decoding: the cached loop equals naive recomputation; batching, filters and stopping behave."""

import torch

from conftest import tiny_model
from minilm.inference.beam import beam_search
from minilm.inference.generate import apply_repetition_penalty, filter_logits, generate, left_pad, pad_prompts

V = 53


def naive_greedy(model, prompt, n, start=None):
    """Recompute the whole sequence at every step, no cache: the reference."""
    if model.config.arch == "encoder-decoder":
        seq = torch.tensor([[start]])
        for _ in range(n):
            seq = torch.cat([seq, model(prompt, seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
        return seq[:, 1:]
    seq = prompt
    for _ in range(n):
        seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return seq[:, prompt.shape[1] :]


def test_decoder_greedy_with_cache_equals_recompute():
    for pos in ("learned", "rope"):
        model = tiny_model("decoder", pos=pos)
        prompt = torch.randint(1, V, (1, 5))
        assert torch.equal(generate(model, prompt, max_new_tokens=20, greedy=True), naive_greedy(model, prompt, 20))


def test_encoder_decoder_greedy_with_cache_equals_recompute():
    model = tiny_model("encoder-decoder")
    src = torch.randint(1, V, (1, 7))
    out = generate(model, src, max_new_tokens=15, greedy=True, decoder_start_id=5)
    assert torch.equal(out, naive_greedy(model, src, 15, start=5))


def test_left_padded_batch_equals_one_by_one():
    model = tiny_model("decoder", pos="learned")
    prompts = [[3, 9, 4, 7, 8, 2], [5, 1], [11, 12, 13]]
    ids, mask = left_pad(prompts, pad_id=0)
    batched = generate(model, ids, mask, max_new_tokens=12, greedy=True)
    for i, p in enumerate(prompts):
        alone = generate(model, torch.tensor([p]), max_new_tokens=12, greedy=True)
        assert torch.equal(batched[i], alone[0]), i


def test_encoder_decoder_batch_of_sources_equals_one_by_one():
    model = tiny_model("encoder-decoder", pos="learned", init_std=0.3)  # wide weights: outputs that depend on the source
    sources = [[3, 9, 4, 7, 8, 2], [5, 1], [11, 12, 13]]
    ids, mask = pad_prompts(sources, pad_id=0, encoder_decoder=True)
    assert ids[1].tolist() == [5, 1, 0, 0, 0, 0]  # sources pad on the right: the encoder counts positions from the start
    batched = generate(model, ids, mask, max_new_tokens=10, greedy=True, decoder_start_id=2)
    for i, s in enumerate(sources):
        alone = generate(model, torch.tensor([s]), max_new_tokens=10, greedy=True, decoder_start_id=2)
        assert torch.equal(batched[i], alone[0]), i
    assert len(set(batched[1].tolist())) > 2, "a degenerate output would prove little"


def test_sampling_is_reproducible_with_a_seed_and_top_k_1_is_greedy():
    model = tiny_model("decoder")
    prompt = torch.randint(1, V, (2, 4))
    a = generate(model, prompt, max_new_tokens=10, generator=torch.Generator().manual_seed(3))
    b = generate(model, prompt, max_new_tokens=10, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    top1 = generate(model, prompt, max_new_tokens=10, top_k=1, generator=torch.Generator().manual_seed(4))
    assert torch.equal(top1, generate(model, prompt, max_new_tokens=10, greedy=True))


def test_eos_stops_rows_and_pads_after():
    model = tiny_model("decoder")
    prompt = torch.randint(1, V, (1, 3))
    first = generate(model, prompt, max_new_tokens=1, greedy=True)[0, 0].item()
    out = generate(model, prompt, max_new_tokens=10, greedy=True, eos_id=first, pad_id=0)
    assert out.shape == (1, 1) and out[0, 0].item() == first  # every row finished: decoding stopped


def test_filters():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[True, False, False, True]]
    # probabilities ~ [0.09, 0.67, 0.24, 0.03]: p=0.7 keeps the two most likely, p=0.5 only the first
    assert torch.isinf(filter_logits(logits, top_p=0.7)).tolist() == [[True, False, False, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.5)).tolist() == [[True, False, True, True]]


def test_repetition_penalty():
    logits = torch.tensor([[2.0, -2.0, 1.0]])
    out = apply_repetition_penalty(logits, torch.tensor([[0, 1]]), 2.0)
    assert out.tolist() == [[1.0, -4.0, 1.0]]
    padded = apply_repetition_penalty(logits, torch.tensor([[0, 1]]), 2.0, counted=torch.tensor([[0, 1]]))
    assert padded.tolist() == [[2.0, -4.0, 1.0]]  # a left pad is not a token present


def test_left_padded_batch_with_a_repetition_penalty_equals_one_by_one():
    model = tiny_model("decoder", pos="learned", init_std=0.3)
    prompts = [[3, 9, 4, 7, 8, 2], [5, 1], [11, 12, 13]]
    for decode in (lambda *a: generate(*a, greedy=True, repetition_penalty=5.0),
                   lambda *a: beam_search(*a, num_beams=2, repetition_penalty=5.0)):
        alone = [decode(model, torch.tensor([p]), None, 12)[0] for p in prompts]
        ids, mask = left_pad(prompts, pad_id=int(alone[1][0]))  # the pads are the token row 1 starts with
        batched = decode(model, ids, mask, 12)
        for i in range(len(prompts)):
            assert torch.equal(batched[i], alone[i]), i


def test_prompt_too_long_for_learned_positions_is_a_clear_error():
    model = tiny_model("decoder")
    try:
        generate(model, torch.randint(1, V, (1, 30)), max_new_tokens=20)
    except ValueError as e:
        assert "max_seq_len=40" in str(e)
    else:
        raise AssertionError("expected a ValueError")


def test_encoder_decoder_max_new_tokens_beyond_positions_is_a_clear_error():
    model = tiny_model("encoder-decoder")
    try:
        generate(model, torch.randint(1, V, (1, 5)), max_new_tokens=41, decoder_start_id=1)
    except ValueError as e:
        assert "max_new_tokens (41) exceeds the model's max_seq_len=40" in str(e)
    else:
        raise AssertionError("expected a ValueError")


def test_generation_may_fill_every_position():
    dec, encdec = tiny_model("decoder"), tiny_model("encoder-decoder")
    assert generate(dec, torch.randint(1, V, (1, 30)), max_new_tokens=11, greedy=True).shape == (1, 11)
    assert generate(encdec, torch.randint(1, V, (1, 5)), max_new_tokens=40, greedy=True, decoder_start_id=1).shape == (1, 40)
