"""Requests per second of `infer.py serve` on /predict, with several clients at once.

    python bench/serve.py --ckpt runs/pretraining-helps/wordnet-pretrained
    python bench/serve.py --ckpt runs/my-classifier --clients 1,4,16 --requests 400

The server runs in its own process (as `infer.py serve` does), bound to 127.0.0.1 on a free port;
each client thread sends one-text /predict requests on a fresh connection, texts taken in turn
from --texts (default: glosses of the WordNet supersense dev set), and every answer must be 200.
"""

import argparse
import gzip
import http.client
import json
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from minilm.checkpoint import atomic_write_json  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default=str(ROOT / "runs" / "pretraining-helps" / "wordnet-pretrained"),
                   help="classifier checkpoint (default: %(default)s)")
    p.add_argument("--texts", default=str(ROOT / "data" / "wordnet" / "supersense" / "dev.tsv.gz"),
                   help="a TSV (optionally gzipped) whose first column holds the texts (default: %(default)s)")
    p.add_argument("--clients", default="1,4,16", help="concurrent clients, comma-separated (default: %(default)s)")
    p.add_argument("--requests", type=int, default=300, help="requests per client setting (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="runs per client setting; the median is kept (default: %(default)s)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "serve.json"), help="results JSON (default: %(default)s)")
    return p.parse_args(argv)


def read_texts(path: str, n: int) -> list[str]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        lines = [line.split("\t")[0] for line in f.read().splitlines()[1:] if line.strip()]
    return [lines[i % len(lines)] for i in range(n)]


def post(address, text: str) -> int:
    conn = http.client.HTTPConnection(*address, timeout=60)
    conn.request("POST", "/predict", body=json.dumps({"text": text}), headers={"Content-Type": "application/json"})
    status = conn.getresponse().status
    conn.close()
    return status


def main(argv=None):
    args = parse_args(argv)
    texts = read_texts(args.texts, args.requests)
    server = subprocess.Popen([sys.executable, str(ROOT / "infer.py"), "serve", "--ckpt", args.ckpt, "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline()
        match = re.search(r"http://([\d.]+):(\d+)", line)
        if not match:
            sys.exit(f"error: the server did not start: {line!r}")
        address = (match.group(1), int(match.group(2)))
        for t in texts[:10]:  # warm-up
            post(address, t)
        rows = []
        for clients in [int(c) for c in args.clients.split(",")]:
            rates = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                with ThreadPoolExecutor(max_workers=clients) as pool:
                    statuses = list(pool.map(lambda t: post(address, t), texts))
                elapsed = time.perf_counter() - start
                if set(statuses) != {200}:
                    sys.exit(f"error: answers other than 200: {sorted(set(statuses))}")
                rates.append(len(texts) / elapsed)
            rows.append({"clients": clients, "requests": len(texts), "requests_per_s": statistics.median(rates)})
            print(f"{clients:3d} clients: {statistics.median(rates):7.1f} requests/s (/predict, one text each)", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=60)
    atomic_write_json(Path(args.out), {"ckpt": args.ckpt, "rows": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
