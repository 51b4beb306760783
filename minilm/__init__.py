"""minilm: BERT-, GPT- and T5/BART-style Transformers written to be read, pretrained and fine-tuned from scratch.

    import minilm
    model = minilm.from_pretrained("runs/finetune-cls")     # a checkpoint directory
    tokenizer = minilm.Tokenizer.load("runs/finetune-cls")
    logits = model(input_ids)                                # the logits of the model's head

`from_pretrained` and `Tokenizer.load` also read Hugging Face checkpoint directories of BERT,
GPT-2 and BART (minilm/interop); `python -m minilm.convert` converts either way.
"""

from minilm import interop  # noqa: F401  (registers the readers of Hugging Face config.json and vocab.txt files)
from minilm.checkpoint import from_pretrained, save_pretrained
from minilm.config import PRESETS, ModelConfig, from_preset
from minilm.model.families import Decoder, Encoder, EncoderDecoder, build_model
from minilm.tokenizer import Tokenizer

__version__ = "0.1.0"

__all__ = [
    "Decoder", "Encoder", "EncoderDecoder", "ModelConfig", "PRESETS", "Tokenizer",
    "build_model", "from_preset", "from_pretrained", "save_pretrained",
]
