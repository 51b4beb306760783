"""The three model families, composed from the same blocks (minilm/model/blocks.py) and heads.

    Encoder         BERT-like:   bidirectional stack; pooler, MLM, NSP, classification heads
    Decoder         GPT-like:    causal stack; LM head tied to the token embedding
    EncoderDecoder  BART/T5-like: bidirectional encoder, causal decoder with cross-attention,
                                  one token embedding shared by both and by the LM head

Calling a model on token ids returns the logits of its head (`config.head`), or the hidden
states (B, T, C) when the head is "none". `hidden()` returns the hidden states of any model, so
a training objective can apply a head to chosen positions only (the MLM head at masked ones).

Notation: B batch, T time, C channels, V vocabulary, L labels.
"""

import math

from torch import nn

from minilm.model.attention import KVCache
from minilm.model.blocks import Transformer
from minilm.model.heads import Classifier, LMHead, MLMHead, PairHead, Pooler, last_token, pool


class Model(nn.Module):
    """What the three families share: weight initialisation and parameter counting."""

    def init_weights(self):
        """N(0, init_std) for every matrix and embedding, zero biases (BERT, GPT-2); the projections
        that write into the residual stream get std / sqrt(2 * n_layers) (GPT-2, section 2.3)."""
        std = self.config.init_std
        n_residual_writes = 2 * (self.config.n_layer + (self.config.decoder_layers if self.config.arch == "encoder-decoder" else 0))
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                scaled = name.endswith(("o_proj", "mlp.fc2"))
                nn.init.normal_(module.weight, 0.0, std / math.sqrt(n_residual_writes) if scaled else std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, 0.0, std)
            elif isinstance(module, LMHead):
                if not any(module.weight is p for p in self._tied_embeddings()):
                    nn.init.normal_(module.weight, 0.0, std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def _tied_embeddings(self):
        return []

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


class Encoder(Model):
    """BERT-like encoder (Devlin et al. 2019). Heads: none, mlm, mlm+nsp, cls, regression, token.
    With config.pair_encoding "bi" the cls / regression head compares two texts encoded apart
    (Sentence-BERT): the forward then reads 2B rows, the pairs' first texts and then their second."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = Transformer(config, config.n_layer, causal=False)
        head = config.head
        if head in ("mlm", "mlm+nsp"):
            self.mlm = MLMHead(config)
            if config.tie_embeddings:
                self.mlm.decoder.weight = self.transformer.embed.token.weight
        self.bi = config.pair_encoding == "bi" and head in ("cls", "regression")  # a pair's texts encoded apart
        if head in ("mlm+nsp", "cls", "regression") and not self.bi:
            self.pooler = Pooler(config)
        if head == "mlm+nsp":
            self.nsp = nn.Linear(config.n_embd, 2)  # IsNext / NotNext
        if self.bi:
            self.classifier = PairHead(config, 1 if head == "regression" else config.n_labels)
        elif head in ("cls", "token"):
            self.classifier = Classifier(config, config.n_labels)
        elif head == "regression":
            self.classifier = Classifier(config, 1)
        self.init_weights()

    def _tied_embeddings(self):
        return [self.transformer.embed.token.weight]

    def hidden(self, input_ids, attention_mask=None, segment_ids=None, keep=None):
        """input_ids (B, T) -> (B, T, C). attention_mask (B, T): 1 real, 0 padding. keep: the first
        `keep` positions' states alone, (B, keep, C) (Transformer.forward)."""
        return self.transformer(input_ids, attention_mask=attention_mask, segment_ids=segment_ids, keep=keep)

    @property
    def reads_cls_only(self) -> bool:
        """Whether the head reads the [CLS] (first) state alone: a cls or regression head with
        pooling "cls" on one text (pair). Its forward then runs the last block at [CLS] only,
        which a mixture-of-experts stack does not (its routing loss counts every token)."""
        return (self.config.head in ("cls", "regression") and not self.bi and self.config.pooling == "cls"
                and self.config.mlp != "moe")

    def head_logits(self, h, attention_mask=None):
        head = self.config.head
        if head in ("mlm", "mlm+nsp"):
            return self.mlm(h)  # (B, T, V)
        if self.bi:  # rows: the pairs' first texts, then their second texts (minilm/inference/task_outputs.py)
            if h.shape[0] % 2:
                raise ValueError(f"a bi-encoder reads 2B rows (B first texts, then B second texts), got {h.shape[0]}")
            u, v = pool(h, attention_mask, self.config.pooling).chunk(2)  # (B, C) each
            return self.classifier(u, v)  # (B,) or (B, L)
        if head in ("cls", "regression"):
            logits = self.classifier(self.pooler(h, attention_mask))  # (B, L)
            return logits.squeeze(-1) if head == "regression" else logits  # regression: (B,)
        if head == "token":
            return self.classifier(h)  # (B, T, L)
        return h  # (B, T, C)

    def nsp_logits(self, h, attention_mask=None):
        """Next-sentence prediction from the pooled state: (B, T, C) -> (B, 2)."""
        return self.nsp(self.pooler(h, attention_mask))

    def forward(self, input_ids, attention_mask=None, segment_ids=None):
        h = self.hidden(input_ids, attention_mask, segment_ids, keep=1 if self.reads_cls_only else None)  # (B, T or 1, C)
        return self.head_logits(h, attention_mask)


class Decoder(Model):
    """GPT-like decoder (Radford et al. 2018, 2019). Heads: none, lm, cls, regression."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = Transformer(config, config.n_layer, causal=True)
        if config.head == "lm":
            self.lm_head = LMHead(config, bias=config.lm_head_bias)
            if config.tie_embeddings:
                self.lm_head.weight = self.transformer.embed.token.weight
        if config.head == "cls":
            self.classifier = Classifier(config, config.n_labels)
        if config.head == "regression":
            self.classifier = Classifier(config, 1)
        self.init_weights()

    def _tied_embeddings(self):
        return [self.transformer.embed.token.weight]

    def hidden(self, input_ids, attention_mask=None, position_ids=None, cache: KVCache | None = None):
        """input_ids (B, T) -> (B, T, C); with a cache, T new positions after the cached ones."""
        return self.transformer(input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache)

    def head_logits(self, h, attention_mask=None):
        if self.config.head == "lm":
            return self.lm_head(h)  # (B, T, V)
        if self.config.head in ("cls", "regression"):
            logits = self.classifier(last_token(h, attention_mask))  # (B, L)
            return logits.squeeze(-1) if self.config.head == "regression" else logits
        return h

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache: KVCache | None = None):
        h = self.hidden(input_ids, attention_mask, position_ids, cache)
        return self.head_logits(h, attention_mask)

    def lm_loss(self, input_ids, labels, attention_mask=None, position_ids=None):
        """The "lm" head's summed cross-entropy over `labels` (B, T) and the number of targets,
        computed as `config.loss_impl` says (LMHead.loss_sum)."""
        return self.lm_head.loss_sum(self.hidden(input_ids, attention_mask, position_ids), labels)


class EncoderDecoder(Model):
    """BART/T5-like encoder-decoder (Vaswani et al. 2017; Lewis et al. 2020). Heads: none, lm."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.encoder = Transformer(config, config.n_layer, causal=False)
        self.decoder = Transformer(config, config.decoder_layers, causal=True, cross=True)
        self.decoder.embed.token.weight = self.encoder.embed.token.weight  # one shared vocabulary table
        if config.head == "lm":
            self.lm_head = LMHead(config, bias=config.lm_head_bias)
            if config.tie_embeddings:
                self.lm_head.weight = self.encoder.embed.token.weight
        self.init_weights()

    def _tied_embeddings(self):
        return [self.encoder.embed.token.weight]

    def encode(self, input_ids, attention_mask=None):
        """Source ids (B, S) -> memory (B, S, C)."""
        return self.encoder(input_ids, attention_mask=attention_mask)

    def decode(self, decoder_input_ids, memory, memory_mask=None, decoder_attention_mask=None, cache=None):
        """Target ids (B, T) attending to memory (B, S, C) -> logits (B, T, V) (or hidden for head none)."""
        h = self.decoder(
            decoder_input_ids, attention_mask=decoder_attention_mask, memory=memory, memory_mask=memory_mask, cache=cache
        )
        return self.lm_head(h) if self.config.head == "lm" else h

    def forward(self, input_ids, decoder_input_ids, attention_mask=None, decoder_attention_mask=None, cache=None):
        memory = self.encode(input_ids, attention_mask)
        return self.decode(decoder_input_ids, memory, attention_mask, decoder_attention_mask, cache)


FAMILIES = {"encoder": Encoder, "decoder": Decoder, "encoder-decoder": EncoderDecoder}


def build_model(config) -> Model:
    """A freshly initialised model of the family named by `config.arch`."""
    return FAMILIES[config.arch](config)


def unwrap(model):
    """The module itself, never a torch.compile or DDP wrapper around it."""
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)  # DDP
