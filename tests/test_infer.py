"""infer.py beyond the basics: streaming equals the plain result, beam search from the command line,
sentence embeddings, and int8 quantisation."""

import json

import pytest
import torch
from torch import nn

import infer
from minilm.inference import predict
from minilm.inference.quantize import linear_weight_bytes, quantize
from test_scripts import corpus, decoder_ckpt, encoder_ckpt  # noqa: F401  (module fixtures)


def run(capsys, *argv):
    infer.main([*argv])
    return capsys.readouterr().out


@pytest.mark.parametrize("how", [["--greedy"], ["--seed", "3", "--top-k", "8"], ["--greedy", "--stop", "e"]])
def test_streamed_text_equals_the_plain_result(decoder_ckpt, capsys, how):
    common = ["generate", "--ckpt", str(decoder_ckpt), "--prompt", "a food like", "--max-new-tokens", "16", *how]
    streamed = run(capsys, *common, "--stream")
    plain = json.loads(run(capsys, *common, "--json"))["text"]
    assert streamed == plain + "\n" and plain.strip()



def test_streaming_holds_back_the_start_of_a_stop_string(decoder_ckpt):
    """A stop string that begins inside one token and ends in the next: the text streamed before
    it completes must not show its first character, and the tokens end where the stop completed."""
    from minilm.inference.predict import GenerationSettings, cut_at_stop

    model, tk = predict.load(decoder_ckpt)
    free = predict.generate_texts(model, tk, ["a food like"], GenerationSettings(max_new_tokens=16, greedy=True))[0]
    t, stop = free["tokens"], None
    for k in range(1, len(t) - 1):
        a, b = tk.decode(t[: k + 1]), tk.decode(t[: k + 2])
        if a.strip() and b.startswith(a) and b[len(a):] and (a[-1] + b[len(a):]) not in a:
            stop = a[-1] + b[len(a):]
            break
    assert stop is not None, free
    pieces = []
    result = predict.generate_texts(model, tk, ["a food like"], GenerationSettings(max_new_tokens=16, greedy=True, stop=[stop]),
                                      pieces.append)[0]
    assert "".join(pieces) == result["text"] == free["text"][: free["text"].index(stop)]
    assert cut_at_stop(tk.decode(result["tokens"]), [stop]) == (result["text"], True)
    assert stop not in tk.decode(result["tokens"][:-1])


def test_empty_prompts_and_non_finite_settings_are_refused(decoder_ckpt):
    from minilm.inference.predict import GenerationSettings

    model, tk = predict.load(decoder_ckpt)
    with pytest.raises(ValueError, match="prompt 2 of 2 is empty"):
        predict.generate_texts(model, tk, ["a", ""], GenerationSettings(max_new_tokens=2))
    for bad, message in [(dict(temperature=float("nan")), "temperature must be a finite number"),
                         (dict(repetition_penalty=float("inf")), "repetition_penalty must be a finite number"),
                         (dict(seed=2**70), "seed must lie in")]:
        with pytest.raises(ValueError, match=message):
            GenerationSettings(**bad).check()


def test_a_tagger_tags_every_word_of_a_text_longer_than_its_positions(encoder_ckpt):
    """Words past the model's max_seq_len are tagged in further pieces, not given a default tag."""
    from minilm.config import ModelConfig
    from minilm.model.families import build_model

    model, tk = predict.load(encoder_ckpt)
    config = ModelConfig(**{**model.config.__dict__, "head": "token", "n_labels": 3, "labels": ["O", "B-x", "I-x"]})
    torch.manual_seed(0)
    tagger = build_model(config).eval()
    with torch.no_grad():
        tagger.classifier.out.weight.normal_(0, 1.0)  # an untrained head, made to tell its words apart
    words = ("the dog cat horse bread cheese apple rice " * 40).split()
    _, index = tk.encode_words([words], max_len=config.max_seq_len)
    reached = max(k for k in index[0] if k is not None) + 1
    assert reached < len(words)  # the text does not fit in one window
    whole = predict.predict_texts(tagger, tk, [" ".join(words)])[0]
    first = predict.predict_texts(tagger, tk, [" ".join(words[:reached])])[0]
    rest = predict.predict_texts(tagger, tk, [" ".join(words[reached:])])[0]
    assert whole["words"] == words and whole["tags"] == first["tags"] + rest["tags"]


@pytest.mark.parametrize("argv, message", [
    (["predict", "--top", "0", "a"], "--top must be positive, got 0"),
    (["embed", "--batch-size", "0", "a"], "--batch-size must be positive, got 0"),
    (["fill-mask", "--top-k", "-1", "a"], "--top-k must be positive, got -1"),
    (["serve", "--port", "70000"], "--port must lie in [0, 65535]"),
    (["predict", "--dtype", "bf16", "--quantize", "int8", "a"], "--quantize int8 computes its products in int8"),
])
def test_bad_infer_flags_are_refused_before_loading(capsys, argv, message):
    with pytest.raises(SystemExit):
        infer.main([*argv, "--ckpt", "/nonexistent"])
    assert message in capsys.readouterr().err


def test_fill_mask_past_the_models_positions_says_so(encoder_ckpt):
    model, tk = predict.load(encoder_ckpt)
    text = "dog " * model.config.max_seq_len + "[MASK]"
    with pytest.raises(ValueError, match=r"lies past the model's \d+ positions"):
        predict.fill_mask(model, tk, [text])


def test_fill_mask_in_batches_answers_as_one_text_at_a_time(encoder_ckpt):
    """Texts of different lengths and numbers of masks, padded into batches: each text's answers
    are those it gets alone (no padded position or other row reaches them), in the texts' order."""
    model, tk = predict.load(encoder_ckpt)
    texts = ["a [MASK] .", "the dog [MASK] like a cat [MASK] bird and a [MASK] .", "[MASK] dog", "a animal like the dog cat [MASK] bird ."]
    alone = [predict.fill_mask(model, tk, [t], top_k=4)[0] for t in texts]
    for batch_size in (2, 32):
        got = predict.fill_mask(model, tk, texts, top_k=4, batch_size=batch_size)
        assert [r["text"] for r in got] == texts and [len(r["masks"]) for r in got] == [1, 3, 1, 1]
        for g, a in zip(got, alone):
            for gm, am in zip(g["masks"], a["masks"]):
                assert [c["token"] for c in gm] == [c["token"] for c in am]
                assert [c["probability"] for c in gm] == pytest.approx([c["probability"] for c in am], abs=1e-6)


def test_fill_mask_targets_score_only_the_given_words(encoder_ckpt, capsys):
    """--targets: the given words alone, best first, each with its probability under the softmax over
    the whole vocabulary; a word of several pieces by its first, with a notice; repeats once."""
    model, tk = predict.load(encoder_ckpt)
    text = "a animal like the dog cat [MASK] bird ."
    whole = predict.fill_mask(model, tk, [text], top_k=tk.vocab_size)[0]["masks"][0]
    p = {c["token"]: c["probability"] for c in whole}  # every token's probability at the mask
    single = [w for w in ("dog", "cat", "bird", "the", "like") if len(tk.encode(w, add_special=False)) == 1]
    split = next(w for w in ("elephantine", "dogcatbird", "zzzqqq") if len(tk.encode(w, add_special=False)) > 1)
    ids, notices = predict.target_ids(tk, [*single, split, single[0]])
    first = tk.id_to_token(tk.encode(split, add_special=False)[0])
    assert ids == [tk.encode(w, add_special=False)[0] for w in (*single, split)]  # in order, the repeat dropped
    assert len(notices) == 1 and repr(split) in notices[0] and repr(first) in notices[0]
    got = predict.fill_mask(model, tk, [text], top_k=3, targets=ids)[0]["masks"][0]
    expected = sorted(((p[tk.id_to_token(i)], tk.id_to_token(i)) for i in ids), reverse=True)[:3]
    assert [c["token"] for c in got] == [t for _, t in expected]
    assert [c["probability"] for c in got] == pytest.approx([q for q, _ in expected])
    capsys.readouterr()
    infer.main(["fill-mask", "--ckpt", str(encoder_ckpt), "--json", "--top-k", "50", "--targets", f"{single[0]}, {split}", text])
    out, err = capsys.readouterr()
    assert [c["token"] for c in json.loads(out)["masks"][0]] == sorted([single[0], first], key=lambda t: -p[t])
    assert f"notice: the target {split!r} is" in err


@pytest.mark.parametrize("targets, message", [(" , ,", "give at least one word"), ("\u2603", "is not in the vocabulary")])
def test_fill_mask_refuses_targets_it_cannot_score(encoder_ckpt, targets, message):
    with pytest.raises(SystemExit, match=message):
        infer.main(["fill-mask", "--ckpt", str(encoder_ckpt), "--targets", targets, "a [MASK] ."])


def test_beam_search_from_the_command_line(decoder_ckpt, capsys):
    common = ["generate", "--ckpt", str(decoder_ckpt), "--prompt", "a tool like", "--prompt", "a", "--max-new-tokens", "10", "--json"]
    first = run(capsys, *common, "--num-beams", "4", "--length-penalty", "0.5")
    assert run(capsys, *common, "--num-beams", "4", "--length-penalty", "0.5") == first  # beam search is deterministic
    beams = [json.loads(x) for x in first.splitlines()]
    assert len(beams) == 2 and all(1 <= len(b["tokens"]) <= 10 for b in beams)
    with pytest.raises(SystemExit, match="num_beams must be >= 1"):
        infer.main([*common, "--num-beams", "0"])


def test_embed_is_the_masked_mean_of_the_hidden_states(encoder_ckpt, capsys):
    texts = ["the dog cat horse", "bread cheese apple rice bean soup", "a"]
    out = [json.loads(x) for x in run(capsys, "embed", "--ckpt", str(encoder_ckpt), "--json", *texts).splitlines()]
    got = torch.tensor([o["embedding"] for o in out])  # (3, C)
    model, tk = predict.load(encoder_ckpt)
    for text, e in zip(texts, got):
        ids = torch.tensor([tk.encode(text)])
        alone = model.hidden(ids)[0].mean(0)  # one text: no padding, a plain mean over its tokens
        assert torch.allclose(e, alone / alone.norm(), atol=1e-5)
    raw = [json.loads(x)["embedding"] for x in run(capsys, "embed", "--ckpt", str(encoder_ckpt), "--json", "--no-normalize", *texts).splitlines()]
    assert abs(torch.tensor(raw[1]).norm().item() - 1.0) > 1e-3


def test_bf16_autocast_inference_stays_close_to_fp32(encoder_ckpt, capsys):
    """--dtype bf16 changes the numbers (the products really run in bf16) and not the answers."""
    texts = ["the dog cat horse", "bread cheese apple rice bean soup", "a"]
    common = ["embed", "--ckpt", str(encoder_ckpt), "--json", *texts]
    fp32, bf16 = ([json.loads(x)["embedding"] for x in run(capsys, *common, "--dtype", d).splitlines()] for d in ("fp32", "bf16"))
    fp32, bf16 = torch.tensor(fp32), torch.tensor(bf16)  # (3, C), unit length
    assert not torch.equal(fp32, bf16)
    assert (fp32 * bf16).sum(-1).min() > 0.99  # cosine similarity
    masked = ["a [MASK] like the dog", "bread [MASK] apple"]
    tops = [[m[0]["token"] for r in map(json.loads, run(capsys, "fill-mask", "--ckpt", str(encoder_ckpt), "--json", "--dtype", d, *masked).splitlines())
             for m in r["masks"]] for d in ("fp32", "auto")]
    assert tops[0] == tops[1]
    assert run(capsys, "embed", "--ckpt", str(encoder_ckpt), "--dtype", "auto", "--quantize", "int8", "a")  # auto under int8: fp32, no error


def test_int8_quantisation_replaces_the_linear_layers_and_stays_close(encoder_ckpt):
    model, tk = predict.load(encoder_ckpt)
    q = quantize(model)
    assert not any(isinstance(m, nn.Linear) for m in q.modules())
    assert isinstance(model.transformer.blocks[0].attn.q_proj, nn.Linear)  # the original is untouched
    assert linear_weight_bytes(q) * 4 == linear_weight_bytes(model)
    ids = torch.tensor([tk.encode("a animal like the dog cat bird fish")])
    with torch.no_grad():
        full, int8 = model(ids)[0], q(ids)[0]  # (T, V)
    assert (full - int8).abs().max() < 0.05 * full.abs().max()
    assert (full.argmax(-1) == int8.argmax(-1)).float().mean() >= 0.75
    with pytest.raises(ValueError, match="unknown quantisation"):
        quantize(model, "int4")


def test_unreadable_input_files_are_clear_errors(encoder_ckpt, tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(SystemExit, match=f"error: {missing}: No such file or directory"):
        infer.main(["embed", "--ckpt", str(encoder_ckpt), "--file", str(missing)])
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("a dog\ncaf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(SystemExit, match=f"error: {latin1}:2: not UTF-8 text \\(column 4"):
        infer.main(["embed", "--ckpt", str(encoder_ckpt), "--file", str(latin1)])


def test_a_reader_that_leaves_early_stops_infer_quietly(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    ROOT = Path(infer.__file__).resolve().parent
    texts = tmp_path / "texts.txt"
    texts.write_text("a domestic [MASK] that barks\n" * 2000)
    proc = subprocess.Popen([sys.executable, str(ROOT / "infer.py"), "fill-mask", "--file", str(texts), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.stdout.read(10)  # the first answer arrived; then the reader leaves, as `| head -c 10` does
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and "Traceback" not in err, err
