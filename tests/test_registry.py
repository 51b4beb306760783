"""Extension points (minilm/model/registry.py): the built-ins are found by name, a file outside minilm
adds a variant that configs, models and every script accept, and an installed plugin (an entry
point) makes a checkpoint that names its variant load with no flag."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import train
from conftest import tiny_config
from minilm.config import ModelConfig
from minilm.model import registry
from minilm.model.attention import math_attention
from minilm.model.families import build_model
from test_scripts import TINY, write_corpus

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "scalenorm.py"


def test_the_built_ins_are_registered_under_the_configs_names():
    for kind, modules in registry.BUILTIN.items():
        builtin = tuple(modules)
        assert registry.names(kind)[: len(builtin)] == builtin
        for name in builtin:
            assert registry.lookup(kind, name) is not None or (kind, name) == ("position", "rope")


def test_an_unknown_name_is_one_clear_error():
    with pytest.raises(ValueError, match="ModelConfig.norm='nonorm': expected one of 'layernorm', 'rmsnorm'"):
        ModelConfig(norm="nonorm")
    with pytest.raises(ValueError, match="no norm of that name; registered: layernorm, rmsnorm"):
        registry.lookup("norm", "nonorm")
    with pytest.raises(ValueError, match="unknown extension point"):
        registry.register("normalisation", "x")


def test_a_name_cannot_be_taken_twice():
    with pytest.raises(ValueError, match="norm 'layernorm' is already registered"):
        registry.register("norm", "layernorm")(torch.nn.Identity)


def test_a_registered_attention_is_the_one_the_model_calls():
    calls = []

    @registry.register("attention", "counted_math")
    def counted(q, k, v, bias, dropout_p, training, is_causal=False):
        calls.append(tuple(q.shape))
        return math_attention(q, k, v, bias, dropout_p, training)

    torch.manual_seed(0)
    model = build_model(tiny_config("decoder", n_layer=2, attn_impl="counted_math"))
    reference = build_model(tiny_config("decoder", n_layer=2, attn_impl="math"))
    reference.load_state_dict(model.state_dict())
    ids = torch.randint(0, 53, (2, 7))
    torch.testing.assert_close(model(ids), reference(ids))
    assert len(calls) == 2 and calls[0][0] == 2  # one call per block; it got the causal mask in bias


def test_the_example_file_adds_a_norm_to_configs_and_models():
    registry.load_plugin(str(EXAMPLE))
    model = build_model(tiny_config("encoder", norm="scalenorm"))
    norms = [m for m in model.modules() if type(m).__name__ == "ScaleNorm"]
    assert norms and all(n.g.shape == () for n in norms)
    assert model(torch.randint(0, 53, (2, 6))).shape[:2] == (2, 6)


def test_every_script_takes_the_example_through_plugin(tmp_path):
    """train.py --plugin FILE --norm scalenorm trains; infer.py and from_pretrained in a fresh
    process load the checkpoint it wrote given the same --plugin; without it, one clear error."""
    corpus = write_corpus(tmp_path / "corpus.txt", lines_per_doc=10, docs_per_topic=2)
    out = tmp_path / "run"
    train.main(["--plugin", str(EXAMPLE), "--norm", "scalenorm", "--arch", "decoder", "--objective", "clm", "--data", str(corpus),
                "--out", str(out), "--max-steps", "3", "--eval-every", "3", "--batch-size", "4", "--val-fraction", "0.1",
                "--eval-batches", "1", *TINY, "--vocab-size", "300"])
    assert json.loads((out / "config.json").read_text())["norm"] == "scalenorm"
    command = [sys.executable, str(ROOT / "infer.py"), "generate", "--ckpt", str(out), "--prompt", "a dog", "--max-new-tokens", "3", "--greedy"]
    done = subprocess.run([*command, "--plugin", str(EXAMPLE)], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    refused = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert refused.returncode != 0 and "scalenorm" in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
    missing = subprocess.run([*command, "--plugin", str(tmp_path / "nothere.py")], capture_output=True, text=True, cwd=tmp_path)
    assert missing.returncode != 0 and "nothere.py: no such file" in missing.stderr


def test_an_installed_plugin_loads_a_checkpoint_that_names_its_variant(tmp_path):
    """A package that declares its module in the entry-point group minilm.plugins (what `pip install`
    of it writes: a .dist-info folder with entry_points.txt) is imported the first time a name is
    looked up: a checkpoint whose config.json names its norm loads with no flag."""
    site = tmp_path / "site"
    (site / "my_variants").mkdir(parents=True)
    (site / "my_variants" / "__init__.py").write_text(EXAMPLE.read_text())
    info = site / "my_variants-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-variants\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[minilm.plugins]\nscalenorm = my_variants\n")
    script = textwrap.dedent(f"""
        import sys, torch
        sys.path[:0] = [{str(site)!r}, {str(ROOT)!r}]
        from minilm.checkpoint import from_pretrained, save_pretrained
        from minilm.config import ModelConfig
        from minilm.model.families import build_model
        model = build_model(ModelConfig(arch="decoder", head="lm", vocab_size=50, n_layer=1, n_head=2, n_embd=16, norm="scalenorm"))
        save_pretrained({str(tmp_path / 'ckpt')!r}, model)
        again = from_pretrained({str(tmp_path / 'ckpt')!r})
        print(type(again.transformer.norm).__name__)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ScaleNorm"]
