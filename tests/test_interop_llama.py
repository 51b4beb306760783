"""Llama checkpoints read into minilm's decoder (grouped-query attention, rotary positions, RMSNorm,
SwiGLU, no biases): the same logits as `transformers` with random weights, padded batches and
greedy decoding with the KV cache; and one clear error for what minilm cannot represent."""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

import minilm  # noqa: E402
from minilm import interop  # noqa: E402
from minilm.inference.generate import generate  # noqa: E402
from test_interop import TOL, batch, hf_model, max_diff, report, saved  # noqa: E402

SIZES = dict(vocab_size=71, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64)
CASES = {
    "gqa": dict(num_key_value_heads=2),
    "mqa": dict(num_key_value_heads=1),
    "mha, theta 500000": dict(num_key_value_heads=4, rope_theta=500000.0),
    "tied embeddings": dict(num_key_value_heads=2, tie_word_embeddings=True),
}


@pytest.mark.parametrize("name", CASES)
def test_llama_logits_match(tmp_path, name):
    hf = hf_model("LlamaForCausalLM", "LlamaConfig", **SIZES, **CASES[name])
    model = minilm.from_pretrained(saved(hf, tmp_path))
    assert model.config.n_kv_head == (None if hf.config.num_key_value_heads == 4 else hf.config.num_key_value_heads)
    assert model.config.rope_theta == CASES[name].get("rope_theta", 10000.0)
    ids, mask = batch(SIZES["vocab_size"])  # right padding in two rows
    with torch.no_grad():
        expected, got = hf(input_ids=ids, attention_mask=mask).logits, model(ids, mask)
    diff = max_diff(expected, got, mask)
    report("llama", name, diff)
    assert diff < TOL


def test_llama_base_model_hidden_states_match(tmp_path):
    hf = hf_model("LlamaModel", "LlamaConfig", **SIZES, num_key_value_heads=2)
    model = minilm.from_pretrained(saved(hf, tmp_path))
    assert model.config.head == "none"
    ids, mask = batch(SIZES["vocab_size"])
    with torch.no_grad():
        assert max_diff(hf(input_ids=ids, attention_mask=mask).last_hidden_state, model(ids, mask), mask) < TOL


def test_llama_greedy_decoding_matches_transformers(tmp_path):
    """Greedy tokens from the KV cache, token for token the ones transformers' generate() gives."""
    hf = hf_model("LlamaForCausalLM", "LlamaConfig", std=0.2, **SIZES, num_key_value_heads=2)
    model = minilm.from_pretrained(saved(hf, tmp_path))
    prompt = torch.randint(3, SIZES["vocab_size"], (2, 6), generator=torch.Generator().manual_seed(4))
    expected = hf.generate(prompt, max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=None)[:, 6:]
    got = generate(model, prompt, max_new_tokens=12, greedy=True)
    assert torch.equal(got, expected), (got, expected)
    assert len(set(got.flatten().tolist())) > 2  # the weights are large enough that it does not repeat one token


@pytest.mark.parametrize("field,value,says", [
    ("rope_parameters", {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}, "rope_type='llama3' is not supported"),
    ("attention_bias", True, "attention_bias=True is not supported"),
    ("hidden_act", "gelu", "hidden_act='gelu' is not supported"),
    ("intermediate_size", 50, "intermediate_size=50 is not supported"),
])
def test_what_minilm_cannot_represent_is_one_clear_error(tmp_path, field, value, says):
    hf = hf_model("LlamaForCausalLM", "LlamaConfig", **SIZES, num_key_value_heads=2)
    saved(hf, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config[field] = value
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=f"config.json: {field if field != 'rope_parameters' else 'rope_type'}"):
        minilm.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=says.replace("(", r"\(").replace("[", r"\[")):
        minilm.from_pretrained(tmp_path)


def test_writing_llama_is_refused_with_a_reason():
    hf_config = interop.llama.config_to_minilm(dict(SIZES, num_key_value_heads=2), "LlamaForCausalLM", "config.json")
    with pytest.raises(ValueError, match="needs n_kv_head=None"):
        interop.save_hf(minilm.build_model(hf_config), None, "/nonexistent")
