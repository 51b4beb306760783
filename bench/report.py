"""What the benchmarks share: a line naming the machine, and a result written as JSON with its
Markdown table beside it (`<out>.json`, `<out>.md`), both atomically."""

import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from minilm.checkpoint import atomic_write_json, atomic_write_text  # noqa: E402


def cpu_name() -> str:
    """The CPU's model name (Linux), else the architecture."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            return names[0]
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(*extra: str) -> str:
    """CPU (model, the vector instructions torch uses, bf16 matrix support), torch threads and
    versions, as each result states them."""
    from minilm.training.trainer import cpu_has_bf16

    isa = torch.backends.cpu.get_cpu_capability()
    parts = [f"{cpu_name()} ({platform.machine()}, {isa}{', bf16 matrix instructions' if cpu_has_bf16() else ', no bf16 matrix instructions'})",
             f"{torch.get_num_threads()} torch threads", f"torch {torch.__version__}", *extra]
    return ", ".join(parts)


def write_results(out, result: dict, lines: list[str]) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, result)
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print(f"wrote {out} and {out.with_suffix('.md')}")
