"""Time one optimizer step: minilm's readable and _foreach paths beside torch.optim's, in one process.

    python bench/optim_step.py                      # the mini preset encoder, 2 threads
    python bench/optim_step.py --preset small --repeats 50 --out /tmp/optim.json

Every optimizer updates the parameters of the same model with the same fixed gradients; the
number is the median wall time of `step()` over --repeats runs (after warm-up steps), and the
ratio is against torch.optim with the same setting of `foreach`, the two taking turns step by step. Results go to a JSON file and
a Markdown table on stdout.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from minilm.config import PRESETS, from_preset  # noqa: E402
from minilm.model.families import build_model  # noqa: E402
from minilm.optim import SGD, Adam, AdamW, param_groups  # noqa: E402

SETTINGS = {
    "sgd": (SGD, torch.optim.SGD, dict(lr=0.01, momentum=0.9, weight_decay=1e-4)),
    "adam": (Adam, torch.optim.Adam, dict(lr=1e-3, weight_decay=1e-4)),
    "adamw": (AdamW, torch.optim.AdamW, dict(lr=1e-3, weight_decay=0.01)),
}


def median_step_ms(makers: dict, model, repeats: int, warmup: int = 3) -> dict:
    """Median ms per step() of each optimizer, each over its own copy of `model`; the optimizers
    take turns step by step, so that drift in the machine's speed hits them alike."""
    opts = {}
    for name, make in makers.items():
        copy = build_model(model.config)
        for q, src in zip(copy.parameters(), model.parameters()):
            q.grad = src.grad.clone()
        opts[name] = make(param_groups(copy, 0.01))
    times = {name: [] for name in opts}
    for i in range(warmup + repeats):
        for name, opt in opts.items():
            t0 = time.perf_counter()
            opt.step()
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="mini", choices=list(PRESETS), help="model size (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=100, help="timed steps per optimizer (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "optim_step.json"), help="JSON results file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(from_preset(args.preset, arch="encoder", head="mlm", vocab_size=8000))
    for q in model.parameters():
        q.grad = torch.randn_like(q) * 1e-3
    n_params, n_tensors = sum(q.numel() for q in model.parameters()), len(list(model.parameters()))
    rows = []
    for name, (ours, theirs, hp) in SETTINGS.items():
        for foreach in (False, True):
            ms = median_step_ms({"minilm": lambda g: ours(g, **hp, foreach=foreach),
                                 "torch": lambda g: theirs(g, **hp, foreach=foreach)}, model, args.repeats)
            mine, ref = ms["minilm"], ms["torch"]
            rows.append({"optimizer": name, "foreach": foreach, "minilm_ms": mine, "torch_ms": ref, "ratio": mine / ref})
    result = {"preset": args.preset, "parameters": n_params, "tensors": n_tensors, "threads": args.threads,
              "repeats": args.repeats, "torch": torch.__version__, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.preset}: {n_params:,} parameters in {n_tensors} tensors, {args.threads} threads, median of {args.repeats} steps\n")
    print("| optimizer | path | minilm ms/step | torch.optim ms/step | ratio |")
    print("|---|---|---|---|---|")
    for r in rows:
        path = "_foreach" if r["foreach"] else "per tensor"
        print(f"| {r['optimizer']} | {path} | {r['minilm_ms']:.2f} | {r['torch_ms']:.2f} | {r['ratio']:.2f} |")


if __name__ == "__main__":
    main()
