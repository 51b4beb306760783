"""minilm: a from-scratch Transformer training framework in pure PyTorch."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="minilm",
    version="0.1.0",
    description="Readable BERT, GPT and T5-style Transformers, pretrained and fine-tuned from scratch in pure PyTorch",
    long_description=(Path(__file__).parent / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["minilm", "minilm.*", "kernels", "kernels.*"]),
    # the shipped checkpoints travel inside the package, so a non-editable install has them too
    package_data={"minilm.pretrained": ["*/model.safetensors", "*/config.json", "*/tokenizer.json", "*/card.json", "*/README.md"]},
    install_requires=[
        "torch>=2.4",  # 2.13 is what CI runs
        "numpy>=1.24",
        "tokenizers>=0.19",
        "tqdm>=4.60",
        "safetensors>=0.4",
    ],
    extras_require={
        # transformers, seqeval and sacrebleu are test-time references only: minilm never imports them
        "dev": ["pytest>=8", "hypothesis>=6.100", "transformers==5.23.0", "tensorboard>=2.14", "seqeval>=1.2", "sacrebleu>=2"],
    },
)
