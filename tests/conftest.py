"""Shared test helpers: tiny configurations that build in milliseconds on a CPU."""

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

from minilm.config import ModelConfig
from minilm.model.families import build_model

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the scripts train.py, finetune.py, infer.py are imported by tests
SHARED_DATA = Path(os.environ.get("MINILM_SHARED_DATA", ROOT.parent / "shared" / "data"))

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def load_file(path, name: str):
    """Import a Python file that is not in a package (infer.py, a data recipe, a benchmark) as the
    module `name`, registered in sys.modules as an import would."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def tiny_config(arch="decoder", head=None, **changes) -> ModelConfig:
    """A 2-layer, 32-wide model with dropout off, float64-friendly sizes."""
    head = head or {"encoder": "none", "decoder": "lm", "encoder-decoder": "lm"}[arch]
    fields = dict(
        arch=arch, head=head, vocab_size=53, n_layer=2, n_head=4, n_embd=32, max_seq_len=40,
        dropout=0.0, attn_dropout=0.0, n_segment=2 if arch == "encoder" else 0,
    )
    fields.update(changes)
    return ModelConfig(**fields)


def tiny_model(arch="decoder", head=None, seed=0, **changes):
    torch.manual_seed(seed)
    return build_model(tiny_config(arch, head, **changes)).eval()


def run(model, ids, mask=None, decoder_ids=None, decoder_mask=None):
    """Forward any family on the same kind of inputs."""
    if model.config.arch == "encoder-decoder":
        return model(ids, decoder_ids if decoder_ids is not None else ids, mask, decoder_mask)
    return model(ids, mask)


@pytest.fixture
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared datasets not present at {SHARED_DATA}")
    return SHARED_DATA
