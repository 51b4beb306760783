"""Property-based fuzzing of every reader and entry point (hypothesis).

The contract: whatever the bytes, a reader returns what it read or raises one error, ValueError or
FileNotFoundError, whose message is one line naming the file (and the line or field where it
knows one). Nothing else escapes: no TypeError, KeyError, IndexError, no traceback from deep inside.

CI runs a bounded number of examples per property (MINILM_FUZZ_EXAMPLES, default 30); a longer
run is one command:

    MINILM_FUZZ_EXAMPLES=2000 python -m pytest -q tests/test_fuzz.py
"""

import json
import os
import struct
from pathlib import Path

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import minilm  # noqa: E402
from minilm.checkpoint import CONFIG_FILE, MODEL_FILE, save_pretrained  # noqa: E402
from minilm.config import ModelConfig, from_preset  # noqa: E402
from minilm.data.corpus import read_documents  # noqa: E402
from minilm.data.tagging import read_conll  # noqa: E402
from minilm.data.tasks import read_examples  # noqa: E402
from minilm.inference.predict import GenerationSettings  # noqa: E402
from minilm.inference.serve import BadRequest, Limits, settings_of, texts_of  # noqa: E402
from minilm.model.families import build_model  # noqa: E402
from minilm.tokenizer import Tokenizer  # noqa: E402

EXAMPLES = int(os.environ.get("MINILM_FUZZ_EXAMPLES", "30"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="MINILM_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# text built from the characters that matter to the formats: separators, quotes, brackets, line ends
FORMAT_CHARS = st.sampled_from(list(',\t"\'\n\r{}[]:#_- 0123456789') + ["text", "label", "pair", "\ufeff", "\x00", "é", "-DOCSTART-", "null", "true"])
FORMATTED = st.lists(FORMAT_CHARS, max_size=60).map("".join)
ANY_BYTES = st.one_of(st.binary(max_size=200), FORMATTED.map(lambda s: s.encode("utf-8")), st.text(max_size=80).map(lambda s: s.encode("utf-8", "surrogatepass")))


def one_line_error_naming(error: BaseException, path) -> None:
    message = str(error)
    assert str(path) in message, message
    assert "\n" not in message, message


def read_or_named_error(read, path):
    """Call `read()`; a ValueError or FileNotFoundError must name `path` in one line. Returns the
    result or None."""
    try:
        return read()
    except (ValueError, FileNotFoundError) as e:
        one_line_error_naming(e, path)
        return None


# ----------------------------------------------------------------------------- task files and corpora

@FUZZ
@given(data=ANY_BYTES, suffix=st.sampled_from([".csv", ".tsv", ".jsonl"]), pair=st.booleans())
def test_task_files(tmp_path_factory, data, suffix, pair):
    path = tmp_path_factory.mktemp("task") / f"f{suffix}"
    path.write_bytes(data)
    examples = read_or_named_error(lambda: read_examples(path, "text", "pair" if pair else None, "label"), path)
    for e in examples or []:
        assert isinstance(e.text, str) and e.text.strip() and isinstance(e.label, str)


@FUZZ
@given(lines=st.lists(st.one_of(FORMATTED, st.just(""), st.just("1\tdog\t_\tNOUN\t_\t_\t0\troot\t_\t_")), max_size=12),
       suffix=st.sampled_from([".conll", ".conllu"]), tag_col=st.sampled_from(["upos", "xpos", "lemma", "bogus"]))
def test_conll_files(tmp_path_factory, lines, suffix, tag_col):
    path = tmp_path_factory.mktemp("conll") / f"f{suffix}"
    path.write_text("\n".join(lines), encoding="utf-8")
    sentences = read_or_named_error(lambda: read_conll(path, tag_col), path)
    for s in sentences or []:
        assert len(s.words) == len(s.tags) > 0


@FUZZ
@given(data=ANY_BYTES, suffix=st.sampled_from([".txt", ".jsonl"]))
def test_corpora(tmp_path_factory, data, suffix):
    path = tmp_path_factory.mktemp("corpus") / f"c{suffix}"
    path.write_bytes(data)
    docs = read_or_named_error(lambda: read_documents(path), path)
    for doc in docs or []:
        assert doc and all(isinstance(line, str) and line for line in doc)


# ----------------------------------------------------------------------------- checkpoints

@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A valid tiny encoder checkpoint: config.json, model.safetensors and tokenizer.json."""
    folder = tmp_path_factory.mktemp("ckpt")
    tokenizer = Tokenizer.train([["a dog barks", "a cat sleeps"]] * 5, kind="wordpiece", vocab_size=64)
    config = from_preset("tiny", vocab_size=tokenizer.vocab_size, head="cls", n_labels=2, labels=["no", "yes"])
    torch.manual_seed(0)
    save_pretrained(folder, build_model(config), tokenizer)
    return folder


def copy_checkpoint(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)
CONFIG_FIELDS = st.sampled_from([f for f in ModelConfig.__dataclass_fields__] + ["bogus", "model_type"])


@FUZZ
@given(changes=st.dictionaries(CONFIG_FIELDS, JSON_VALUES, min_size=1, max_size=3))
def test_config_json(tiny_checkpoint, tmp_path_factory, changes):
    folder = copy_checkpoint(tiny_checkpoint, tmp_path_factory.mktemp("cfg") / "ckpt")
    config = json.loads((folder / CONFIG_FILE).read_text())
    (folder / CONFIG_FILE).write_text(json.dumps({**config, **changes}))
    model = read_or_named_error(lambda: minilm.from_pretrained(folder), folder)
    if model is not None:  # what loads also runs
        model(torch.tensor([[1, 2, 3]]))


@FUZZ
@given(data=ANY_BYTES)
def test_config_json_bytes(tiny_checkpoint, tmp_path_factory, data):
    folder = copy_checkpoint(tiny_checkpoint, tmp_path_factory.mktemp("cfgb") / "ckpt")
    (folder / CONFIG_FILE).write_bytes(data)
    read_or_named_error(lambda: minilm.from_pretrained(folder), folder)


@FUZZ
@given(cut=st.integers(0, 4000), flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4))
def test_safetensors_truncated_or_corrupt(tiny_checkpoint, tmp_path_factory, cut, flips):
    folder = copy_checkpoint(tiny_checkpoint, tmp_path_factory.mktemp("st") / "ckpt")
    data = bytearray((folder / MODEL_FILE).read_bytes())
    header = struct.unpack("<Q", bytes(data[:8]))[0] + 8
    if flips:
        for at, value in flips:
            data[at % header] = value  # corrupt the header, where the structure is
    else:
        data = data[: cut % len(data)]
    (folder / MODEL_FILE).write_bytes(bytes(data))
    read_or_named_error(lambda: minilm.from_pretrained(folder), folder)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_named(tiny_checkpoint, tmp_path, value):
    from safetensors.torch import load_file, save_file

    folder = copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
    tensors = load_file(folder / MODEL_FILE)
    name = sorted(tensors)[3]
    tensors[name][0] = value
    save_file(tensors, folder / MODEL_FILE)
    with pytest.raises(ValueError) as e:
        minilm.from_pretrained(folder)
    one_line_error_naming(e.value, folder / MODEL_FILE)
    assert name in str(e.value) and ("NaN" in str(e.value) or "inf" in str(e.value))


@pytest.mark.parametrize("dtype", [torch.int32, torch.float64, torch.bool])
def test_wrong_dtype_weights(tiny_checkpoint, tmp_path, dtype):
    from safetensors.torch import load_file, save_file

    folder = copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
    tensors = {k: v.to(dtype) for k, v in load_file(folder / MODEL_FILE).items()}
    save_file(tensors, folder / MODEL_FILE)
    model = read_or_named_error(lambda: minilm.from_pretrained(folder), folder)
    if model is not None:  # a float64 copy of the weights loads (cast, as torch does)
        assert dtype == torch.float64
        assert next(model.parameters()).dtype == torch.float32


@FUZZ
@given(data=ANY_BYTES, valid_prefix=st.booleans())
def test_tokenizer_json(tiny_checkpoint, tmp_path_factory, data, valid_prefix):
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    text = (tiny_checkpoint / "tokenizer.json").read_bytes()
    path.write_bytes(text[: len(data) * 37 % len(text)] + data if valid_prefix else data)
    read_or_named_error(lambda: Tokenizer.load(path), path)


# ----------------------------------------------------------------------------- the server's JSON fields

SETTING_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=5),
                           st.lists(st.text(max_size=4), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
SETTING_NAMES = st.sampled_from(sorted(GenerationSettings.__dataclass_fields__) + ["prompt", "prompts", "stream", "max_new_token"])


@pytest.fixture(scope="module")
def tiny_decoder():
    tokenizer = Tokenizer.train([["a dog barks", "a cat sleeps"]] * 5, kind="bpe", vocab_size=300)
    torch.manual_seed(0)
    model = build_model(from_preset("tiny", arch="decoder", vocab_size=tokenizer.vocab_size)).eval()
    return model, tokenizer


@FUZZ
@given(body=st.dictionaries(SETTING_NAMES, SETTING_VALUES, max_size=5))
def test_generate_fields(tiny_decoder, body):
    """Every /generate body is refused with a BadRequest (a 4xx) or generates: never a 500."""
    model, tokenizer = tiny_decoder
    limits = Limits(max_new_tokens=4, max_beams=2)
    try:
        prompts, _ = texts_of(body, "prompt", "prompts", limits)
        s = settings_of(body, limits)
    except BadRequest as e:
        assert "\n" not in str(e) and 400 <= e.status < 500
        return
    from minilm.inference.predict import generate_texts

    try:
        outs = generate_texts(model, tokenizer, prompts, s)
    except ValueError as e:  # the model refused the input: the server answers 400 with this line
        assert "\n" not in str(e) and str(e)
        return
    assert len(outs) == len(prompts)


@FUZZ
@given(field=st.sampled_from(["text", "texts"]), value=SETTING_VALUES, extra=st.dictionaries(st.text(max_size=4), SETTING_VALUES, max_size=2))
def test_predict_and_embed_fields(field, value, extra):
    body = {field: value, **extra}
    try:
        texts, many = texts_of(body, "text", "texts", Limits(max_batch=4))
    except BadRequest as e:
        assert "\n" not in str(e) and 400 <= e.status < 500
        return
    assert texts and all(isinstance(t, str) for t in texts) and many == (field == "texts")


# ----------------------------------------------------------------------------- what the fuzzing found, pinned

@pytest.mark.parametrize("changes, expected", [
    ({"n_layer": "4"}, "ModelConfig.n_layer='4': expected int"),  # a string where a number belongs
    ({"dropout": True}, "ModelConfig.dropout=True: expected float"),
    ({"labels": "no,yes"}, "ModelConfig.labels='no,yes': expected list"),
    ({"model_type": []}, "model_type=[] is not supported"),  # an unhashable model_type was a TypeError
    ({"n_embd": 32, "n_head": 2}, "weights do not fit"),  # one line, not a line per tensor
])
def test_config_errors_found_by_fuzzing(tiny_checkpoint, tmp_path, changes, expected):
    folder = copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
    config = json.loads((folder / CONFIG_FILE).read_text())
    (folder / CONFIG_FILE).write_text(json.dumps({**config, **changes}))
    with pytest.raises(ValueError) as e:
        minilm.from_pretrained(folder)
    one_line_error_naming(e.value, folder)
    assert expected in str(e.value)


def test_a_config_that_is_not_utf8(tiny_checkpoint, tmp_path):
    folder = copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
    (folder / CONFIG_FILE).write_bytes(b"\x80{}")
    with pytest.raises(ValueError, match=r"config\.json: not UTF-8 text"):
        minilm.from_pretrained(folder)


# ----------------------------------------------------------------------------- infer.py arguments

INFER_FLAGS = {
    "generate": ["--prompt", "--max-new-tokens", "--greedy", "--temperature", "--top-k", "--top-p", "--repetition-penalty",
                 "--num-beams", "--length-penalty", "--stop", "--seed", "--json", "--stream"],
    "predict": ["--pair", "--top", "--json", "--file", "--batch-size"],
    "fill-mask": ["--top-k", "--json", "--file"],
    "embed": ["--no-normalize", "--json", "--file", "--batch-size"],
}
FLAG_VALUES = st.sampled_from(["0", "1", "3", "-1", "0.5", "1e9", "nan", "inf", "-inf", "", "x", "a dog [MASK]", "[MASK]", "é", "\x00"])


@pytest.fixture(scope="module")
def infer_module():
    from conftest import load_file

    return load_file(Path(__file__).resolve().parent.parent / "infer.py", "minilm_infer_fuzz")


@pytest.fixture(scope="module")
def tiny_decoder_ckpt(tmp_path_factory, tiny_decoder):
    folder = tmp_path_factory.mktemp("dec")
    save_pretrained(folder, *tiny_decoder)
    return folder


@FUZZ
@given(command=st.sampled_from(sorted(INFER_FLAGS)), picks=st.lists(st.tuples(st.integers(0, 20), FLAG_VALUES), max_size=5),
       texts=st.lists(FLAG_VALUES, max_size=2), ckpt=st.sampled_from(["decoder", "classifier", "missing"]))
def test_infer_arguments(infer_module, tiny_checkpoint, tiny_decoder_ckpt, tmp_path_factory, capsys, command, picks, texts, ckpt):
    """Any infer.py command line ends in its output or in SystemExit with a non-zero code and a
    one-line message (argparse's usage error included); never in another exception."""
    folder = {"decoder": tiny_decoder_ckpt, "classifier": tiny_checkpoint, "missing": tmp_path_factory.mktemp("none") / "nothing"}[ckpt]
    argv = [command, "--ckpt", str(folder)]
    flags = INFER_FLAGS[command]
    for k, value in picks:
        flag = flags[k % len(flags)]
        argv += [flag] if flag in ("--greedy", "--json", "--stream", "--no-normalize") else [flag, value]
    if command == "generate":
        argv += ["--max-new-tokens", "2"] if "--max-new-tokens" not in argv else []
    else:
        argv += [t for t in texts if t] or ["a text"]
    try:
        infer_module.main(argv)
    except SystemExit as e:
        if e.code not in (0, None):
            message = str(e.code) if not isinstance(e.code, int) else capsys.readouterr().err.strip().splitlines()[-1]
            assert "\n" not in message.strip() and "Traceback" not in message
    capsys.readouterr()
