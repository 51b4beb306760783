"""Shapes of every head of every family."""

import pytest
import torch

from conftest import run, tiny_model

B, T, V, C = 3, 7, 53, 32


@pytest.mark.parametrize(
    "arch, head, shape",
    [
        ("encoder", "none", (B, T, C)),
        ("encoder", "mlm", (B, T, V)),
        ("encoder", "mlm+nsp", (B, T, V)),
        ("encoder", "cls", (B, 5)),
        ("encoder", "regression", (B,)),
        ("encoder", "token", (B, T, 5)),
        ("decoder", "none", (B, T, C)),
        ("decoder", "lm", (B, T, V)),
        ("decoder", "cls", (B, 5)),
        ("decoder", "regression", (B,)),
        ("encoder-decoder", "none", (B, T, C)),
        ("encoder-decoder", "lm", (B, T, V)),
    ],
)
def test_head_shapes(arch, head, shape):
    model = tiny_model(arch, head, n_labels=5 if head in ("cls", "token") else 0)
    ids = torch.randint(0, V, (B, T))
    assert run(model, ids).shape == shape


def test_nsp_and_pooler_shapes():
    model = tiny_model("encoder", "mlm+nsp")
    h = model.hidden(torch.randint(0, V, (B, T)), segment_ids=torch.zeros(B, T, dtype=torch.long))
    assert h.shape == (B, T, C)
    assert model.nsp_logits(h).shape == (B, 2)
    assert model.mlm(h[:, :2]).shape == (B, 2, V)  # the MLM head applies to any selection of positions


def test_encoder_decoder_shapes_with_different_lengths():
    model = tiny_model("encoder-decoder", n_decoder_layer=3)
    src, tgt = torch.randint(0, V, (B, 9)), torch.randint(0, V, (B, 4))
    memory = model.encode(src)
    assert memory.shape == (B, 9, C)
    assert model.decode(tgt, memory).shape == (B, 4, V)
    assert len(model.decoder.blocks) == 3 and len(model.encoder.blocks) == 2


@pytest.mark.parametrize("arch", ["decoder", "encoder-decoder"])
def test_lm_head_is_tied_to_token_embedding(arch):
    model = tiny_model(arch)
    embed = (model.transformer if arch == "decoder" else model.encoder).embed.token.weight
    assert model.lm_head.weight is embed
    if arch == "encoder-decoder":
        assert model.decoder.embed.token.weight is embed


def test_untied_lm_head_has_its_own_weight():
    model = tiny_model("decoder", tie_embeddings=False)
    assert model.lm_head.weight is not model.transformer.embed.token.weight
