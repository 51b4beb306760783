"""Objectives: BERT masking statistics, the summed cross-entropy, T5 noise masks and span corruption."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minilm.objectives import IGNORE_INDEX, cross_entropy_sum, mask_tokens, random_spans_noise_mask, span_corrupt

V, MASK_ID = 1000, 4
SPECIAL = {0, 2, 3, 4}  # pad, cls, sep, mask


def random_batch(seed=0, B=64, T=512):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, V, (B, T), generator=g)
    ids[:, 0], ids[:, T // 2] = 2, 3  # [CLS] ... [SEP] ...
    ids[: B // 2, -T // 8 :] = 0  # padding at the end of half the rows
    return ids


def test_mask_tokens_statistics():
    ids = random_batch()
    original = ids.clone()
    inputs, labels = mask_tokens(ids, SPECIAL, MASK_ID, V, torch.Generator().manual_seed(1))
    assert torch.equal(ids, original)  # the input is not modified in place
    assert inputs.shape == labels.shape == ids.shape and inputs.dtype == labels.dtype == torch.long

    special = torch.isin(ids, torch.tensor(sorted(SPECIAL)))
    chosen = labels != IGNORE_INDEX
    assert special.sum() > 2000  # the test batch has plenty of specials to avoid
    assert not (chosen & special).any()  # special tokens are never chosen
    assert torch.equal(inputs[special], ids[special])
    assert torch.equal(labels[chosen], ids[chosen])  # labels are the originals where chosen ...
    assert (labels[~chosen] == IGNORE_INDEX).all()  # ... and IGNORE_INDEX exactly elsewhere
    assert torch.equal(inputs[~chosen], ids[~chosen])  # nothing else changes

    n_candidates, n_chosen = int((~special).sum()), int(chosen.sum())
    assert abs(n_chosen / n_candidates - 0.15) < 0.01  # +-7 standard deviations of 29k Bernoulli(0.15)
    masked = chosen & (inputs == MASK_ID)
    kept = chosen & (inputs == ids)
    randomised = chosen & ~masked & ~kept
    assert abs(int(masked.sum()) / n_chosen - 0.8) < 0.03
    assert abs(int(randomised.sum()) / n_chosen - 0.1) < 0.025
    assert abs(int(kept.sum()) / n_chosen - 0.1) < 0.025
    random_tokens = inputs[randomised]
    assert random_tokens.min() >= 0 and random_tokens.max() < V
    assert len(random_tokens.unique()) > 250  # ~440 draws from 1000 ids give ~356 distinct ones


def test_mask_prob_is_honoured():
    ids = random_batch(B=32, T=256)
    _, labels = mask_tokens(ids, SPECIAL, MASK_ID, V, torch.Generator().manual_seed(0), mask_prob=0.4)
    n_candidates = int((~torch.isin(ids, torch.tensor(sorted(SPECIAL)))).sum())
    assert abs(int((labels != IGNORE_INDEX).sum()) / n_candidates - 0.4) < 0.02


def test_mask_tokens_is_deterministic_per_generator_seed():
    ids = random_batch(B=8, T=64)
    a = mask_tokens(ids, SPECIAL, MASK_ID, V, torch.Generator().manual_seed(7))
    b = mask_tokens(ids, SPECIAL, MASK_ID, V, torch.Generator().manual_seed(7))
    c = mask_tokens(ids, SPECIAL, MASK_ID, V, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_cross_entropy_sum_matches_torch_mean_times_count():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 11, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 11, (3, 7), generator=g)
    labels[0, :3] = IGNORE_INDEX
    labels[2, -1] = IGNORE_INDEX
    loss, count = cross_entropy_sum(logits, labels)
    assert count == 21 - 4 and isinstance(count, int)
    mean = F.cross_entropy(logits.reshape(-1, 11), labels.reshape(-1), ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(loss.double(), mean * count)
    by_hand = -sum(torch.log_softmax(logits[b, t], -1)[labels[b, t]] for b in range(3) for t in range(7) if labels[b, t] != IGNORE_INDEX)
    torch.testing.assert_close(loss.double(), by_hand, rtol=1e-6, atol=1e-6)

    # summing the parts and dividing once by the total count gives the mean of the whole
    l1, c1 = cross_entropy_sum(logits[:1], labels[:1])
    l2, c2 = cross_entropy_sum(logits[1:], labels[1:])
    torch.testing.assert_close(((l1 + l2) / (c1 + c2)).double(), mean)


def test_cross_entropy_sum_with_nothing_to_predict_and_low_precision():
    logits = torch.randn(2, 5, 9)
    labels = torch.full((2, 5), IGNORE_INDEX)
    loss, count = cross_entropy_sum(logits, labels)
    assert count == 0 and float(loss) == 0.0
    labels[1, 2] = 4
    loss, count = cross_entropy_sum(logits.bfloat16(), labels)  # computed in float32
    assert count == 1 and loss.dtype == torch.float32
    torch.testing.assert_close(loss, -torch.log_softmax(logits[1, 2].bfloat16().float(), -1)[4])


# length -> round(0.15 * length), written out by hand
NOISE_COUNTS = {7: 1, 20: 3, 33: 5, 64: 10, 100: 15, 128: 19, 257: 39, 511: 77}


def spans(mask):
    """Lengths of the runs of True."""
    edges = np.diff(np.concatenate([[0], mask.astype(int), [0]]))
    return np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)


@pytest.mark.parametrize("length, n_noise", NOISE_COUNTS.items())
def test_noise_mask_count(length, n_noise):
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = random_spans_noise_mask(length, rng)
        assert mask.shape == (length,) and mask.dtype == bool
        assert mask.sum() == n_noise
        assert len(spans(mask)) == max(1, round(n_noise / 3))


def test_noise_mask_short_sequences_keep_a_token_and_noise_one():
    rng = np.random.default_rng(0)
    assert random_spans_noise_mask(2, rng).sum() == 1
    assert random_spans_noise_mask(3, rng).sum() == 1
    assert random_spans_noise_mask(1, rng).sum() == 0


def test_noise_mask_mean_span_length_and_randomness():
    rng = np.random.default_rng(0)
    all_spans, starts = [], set()
    for length in rng.integers(20, 300, size=300):
        mask = random_spans_noise_mask(int(length), rng)
        all_spans.extend(spans(mask))
        starts.add(int(np.argmax(mask)))
    all_spans = np.array(all_spans)
    assert abs(all_spans.mean() - 3.0) < 0.25
    assert len(set(all_spans.tolist())) >= 6  # span lengths are a random partition, not all 3
    assert len(starts) > 20  # and so are the gaps
    a = random_spans_noise_mask(100, np.random.default_rng(5))
    b = random_spans_noise_mask(100, np.random.default_rng(5))
    c = random_spans_noise_mask(100, np.random.default_rng(6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


EOS, SENTINELS = 6, list(range(7, 39))


def reconstruct(source, target):
    """Put each span of the target back in place of its sentinel in the source."""
    assert source[-1] == EOS and target[-1] == EOS
    groups, current = [], None
    for tok in target[:-1]:
        if tok in SENTINELS:
            current = []
            groups.append((tok, current))
        else:
            current.append(tok)
    out, k = [], 0
    for tok in source[:-1]:
        if tok in SENTINELS:
            sentinel, span = groups[k]
            assert sentinel == tok and span
            out.extend(span)
            k += 1
        else:
            out.append(tok)
    assert k == len(groups)
    return out


@pytest.mark.parametrize("length, n_noise", [(2, 1), (5, 1), (20, 3), (64, 10), (129, 19), (400, 60), (1000, 150)])
def test_span_corrupt_reconstructs_the_input(length, n_noise):
    rng = np.random.default_rng(length)
    for _ in range(10):
        tokens = rng.integers(100, 200, size=length)
        source, target = span_corrupt(tokens, SENTINELS, EOS, rng)
        assert all(isinstance(t, int) for t in source + target)
        assert source[-1] == EOS and target[-1] == EOS and EOS not in source[:-1] + target[:-1]
        assert reconstruct(source, target) == tokens.tolist()
        n_spans = sum(t in SENTINELS for t in source)
        assert len(target) - 1 - n_spans == n_noise
        used = [t for t in source if t in SENTINELS]
        assert used == [SENTINELS[i % len(SENTINELS)] for i in range(len(used))]  # [X0], [X1], ... (wrapping past 32)


def test_span_corrupt_is_deterministic_per_seed():
    tokens = list(range(100, 160))
    a = span_corrupt(tokens, SENTINELS, EOS, np.random.default_rng(3))
    b = span_corrupt(tokens, SENTINELS, EOS, np.random.default_rng(3))
    c = span_corrupt(tokens, SENTINELS, EOS, np.random.default_rng(4))
    assert a == b and a != c


def test_whole_word_masking_chooses_all_pieces_of_a_word_or_none():
    from minilm.objectives import mask_tokens

    ids = torch.arange(10, 74).reshape(2, 32)  # (B, T), no special tokens but [CLS]-like id 2 at 0
    ids[:, 0] = 2
    g = torch.Generator().manual_seed(0)
    word_starts = torch.rand(2, 32, generator=g) < 0.4  # words of 1-5 pieces
    word_starts[:, :2] = True
    word = torch.cumsum(word_starts.long(), dim=1)
    chosen_pieces, partial = 0, 0
    for seed in range(50):
        _, labels = mask_tokens(ids, {2}, 4, 100, torch.Generator().manual_seed(seed), mask_prob=0.3, word_starts=word_starts)
        chosen = labels != -100
        assert not chosen[:, 0].any()  # the special token never
        for b in range(2):
            for w in word[b].unique():
                in_word = chosen[b][word[b] == w]
                partial += bool(in_word.any() and not in_word.all())
        chosen_pieces += int(chosen.sum())
    assert partial == 0
    assert 0.2 < chosen_pieces / (50 * 2 * 31) < 0.4  # about mask_prob of the pieces
    _, plain = mask_tokens(ids, {2}, 4, 100, torch.Generator().manual_seed(1), mask_prob=0.3)
    pieces = plain != -100  # without word_starts, pieces of a word are chosen independently: some words split
    assert any(bool(pieces[b][word[b] == w].any() and not pieces[b][word[b] == w].all()) for b in range(2) for w in word[b].unique())


def test_output_bias_starts_at_the_unigram_model():
    """With the MLM bias at log unigram frequencies and no signal through the hidden states, the
    model's distribution is the unigram one: its cross-entropy is the unigram baseline."""
    from conftest import tiny_model
    from minilm.training.pretraining import init_output_bias, unigram_baseline

    model = tiny_model("encoder", "mlm")
    counts = torch.randint(0, 50, (53,))
    assert init_output_bias(model, counts)
    with torch.no_grad():
        model.mlm.decoder.weight.zero_()  # the tied embedding: no contribution from h
        logits = model.mlm(torch.randn(4, 32))  # (4, V)
    p = (counts + 1.0) / (counts + 1.0).sum()
    torch.testing.assert_close(logits.log_softmax(-1)[0], p.log().float(), rtol=1e-5, atol=1e-5)
    assert unigram_baseline(counts, counts) == pytest.approx(float(-(counts * p.log()).sum() / counts.sum()))
    assert not init_output_bias(tiny_model("decoder"), counts)  # GPT-style LM head: no bias
