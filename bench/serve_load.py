"""`infer.py serve` under load: many clients, mixed endpoints, malformed requests, idle connections.

    python bench/serve_load.py                                  # 8 clients x 500 requests, 2,000 idle connections
    python bench/serve_load.py --clients 4 --requests 50 --idle 200 --out /tmp/load.json

Two servers run in their own processes on 127.0.0.1, as `infer.py serve` runs them: the shipped
decoder minilm-mini-decoder (/generate and /embed) and a classifier made from the shipped encoder
minilm-mini (/predict and /embed; its head is untrained unless --cls-ckpt names a fine-tuned one:
the load, not the answers, is measured). Each client sends --requests requests in a fixed mix:

    /predict 30%   one text               must answer 200
    /embed   30%   one text               must answer 200
    /generate 25%  8 new tokens, greedy   must answer 200
    malformed 15%  bad JSON, a misspelt field, a wrong type, an unknown endpoint, an oversized body
                                          must answer 4xx (never 500, never a dropped connection)

Before the clients start, --idle connections are opened to each server and left silent (half of
them having sent part of a request line): valid requests must still be answered while they are
held. Reported: requests/s over all clients, p50/p99 latency per kind, errors per kind, and each
server's resident memory (VmRSS) after warm-up and after the run.
"""

import argparse
import http.client
import json
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from minilm.checkpoint import atomic_write_json  # noqa: E402

TEXTS = ["a domestic animal that barks", "the act of moving quickly", "a large body of salt water", "a feeling of great happiness",
         "to make a sound like a bell", "an instrument for measuring time", "the science of matter and energy", "a tall perennial woody plant"]
MIX = ["predict"] * 6 + ["embed"] * 6 + ["generate"] * 5 + ["malformed"] * 3  # 20 slots: 30 / 30 / 25 / 15 %
MALFORMED = [  # (path, raw body)
    ("/predict", b"{not json"),
    ("/generate", json.dumps({"prompt": "a dog", "max_new_token": 4}).encode()),  # misspelt field
    ("/embed", json.dumps({"texts": "not a list"}).encode()),
    ("/nowhere", json.dumps({"text": "x"}).encode()),
    ("/predict", json.dumps({"text": "x" * (2 << 20)}).encode()),  # over the 1 MiB default body limit
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lm-ckpt", default="minilm-mini-decoder", help="decoder for /generate (default: %(default)s)")
    p.add_argument("--cls-ckpt", help="classifier for /predict (default: minilm-mini with a fresh 3-label head)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default: %(default)s)")
    p.add_argument("--requests", type=int, default=500, help="requests per client (default: %(default)s)")
    p.add_argument("--idle", type=int, default=2000, help="idle connections held open to each server during the run (default: %(default)s)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "serve_load.json"), help="results JSON (default: %(default)s)")
    return p.parse_args(argv)


def classifier_from_encoder(folder: Path) -> Path:
    import minilm
    from minilm.checkpoint import save_pretrained
    from minilm.model.families import build_model

    base = minilm.from_pretrained("minilm-mini")
    model = build_model(base.config.replace(head="cls", n_labels=3, labels=["a", "b", "c"], pooling="mean"))
    model.load_state_dict(base.state_dict(), strict=False)
    save_pretrained(folder, model.eval(), minilm.Tokenizer.load("minilm-mini"))
    return folder


def start_server(ckpt) -> tuple[subprocess.Popen, tuple]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "infer.py"), "serve", "--ckpt", str(ckpt), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    match = re.search(r"http://([\d.]+):(\d+)", line)
    if not match:
        proc.kill()
        sys.exit(f"error: the server for {ckpt} did not start: {line!r}")
    return proc, (match.group(1), int(match.group(2)))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def send(address, path: str, body: bytes) -> int:
    """The status of one request on a fresh connection; 0 if the connection failed."""
    conn = http.client.HTTPConnection(*address, timeout=120)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        conn.close()


def one_request(kind: str, i: int, lm, cls) -> tuple[str, int, float]:
    text = TEXTS[i % len(TEXTS)]
    if kind == "predict":
        address, path, body = cls, "/predict", json.dumps({"text": text}).encode()
    elif kind == "embed":
        address, path, body = (lm if i % 2 else cls), "/embed", json.dumps({"text": text}).encode()
    elif kind == "generate":
        address, path, body = lm, "/generate", json.dumps({"prompt": text, "max_new_tokens": 8, "greedy": True}).encode()
    else:
        path, body = MALFORMED[i % len(MALFORMED)]
        address = lm if i % 2 else cls
    t0 = time.perf_counter()
    status = send(address, path, body)
    return kind, status, time.perf_counter() - t0


def hold_idle(address, n: int) -> list[socket.socket]:
    """n connections that say nothing (every other one sent half a request line and stopped)."""
    socks = []
    for k in range(n):
        s = socket.create_connection(address, timeout=10)
        if k % 2:
            s.sendall(b"POST /predict HT")
        socks.append(s)
    return socks


def run(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cls_ckpt = args.cls_ckpt or classifier_from_encoder(Path(tmp) / "cls")
        lm_proc, lm = start_server(args.lm_ckpt)
        cls_proc, cls = start_server(cls_ckpt)
        idle = []
        try:
            for i in range(20):  # warm-up: every path once or more
                one_request(MIX[i % len(MIX)], i, lm, cls)
            rss_before = {"lm": rss_mib(lm_proc.pid), "cls": rss_mib(cls_proc.pid)}
            t_idle = time.perf_counter()
            idle = hold_idle(lm, args.idle) + hold_idle(cls, args.idle)
            idle_s = time.perf_counter() - t_idle
            jobs = [(MIX[(c * 7 + i) % len(MIX)], c * args.requests + i) for c in range(args.clients) for i in range(args.requests)]
            start = time.perf_counter()
            with ThreadPoolExecutor(max_workers=args.clients) as pool:
                results = list(pool.map(lambda job: one_request(job[0], job[1], lm, cls), jobs))
            elapsed = time.perf_counter() - start
            rss_after = {"lm": rss_mib(lm_proc.pid), "cls": rss_mib(cls_proc.pid)}
        finally:
            for s in idle:
                s.close()
            for proc in (lm_proc, cls_proc):
                proc.terminate()
                proc.wait(timeout=60)
    kinds = {}
    for kind, status, seconds in results:
        k = kinds.setdefault(kind, {"n": 0, "errors": 0, "statuses": {}, "latencies": []})
        k["n"] += 1
        k["statuses"][str(status)] = k["statuses"].get(str(status), 0) + 1
        k["latencies"].append(seconds)
        bad = not 400 <= status < 500 if kind == "malformed" else status != 200
        k["errors"] += bad
    rows = {}
    for kind, k in sorted(kinds.items()):
        lat = sorted(k["latencies"])
        rows[kind] = {"requests": k["n"], "errors": k["errors"], "statuses": k["statuses"],
                      "p50_ms": 1000 * statistics.median(lat), "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))]}
    return {
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "clients": args.clients, "requests_per_client": args.requests, "idle_connections_per_server": args.idle,
        "idle_connect_s": idle_s, "seconds": elapsed, "requests_per_s": len(results) / elapsed,
        "kinds": rows, "rss_mib_before": rss_before, "rss_mib_after": rss_after,
        "lm_ckpt": str(args.lm_ckpt), "cls_ckpt": str(args.cls_ckpt or "minilm-mini + a fresh cls head"),
    }


def main(argv=None):
    args = parse_args(argv)
    report = run(args)
    atomic_write_json(Path(args.out), report)
    print(f"{args.clients} clients x {args.requests} requests, {args.idle} idle connections held to each server: "
          f"{report['requests_per_s']:.1f} requests/s")
    for kind, r in report["kinds"].items():
        print(f"  {kind:9s} {r['requests']:5d} requests, {r['errors']} errors, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, statuses {r['statuses']}")
    for name in ("lm", "cls"):
        print(f"  {name} server memory: {report['rss_mib_before'][name]:.0f} MiB after warm-up, {report['rss_mib_after'][name]:.0f} MiB after the run")
    print(f"wrote {args.out}")
    errors = sum(r["errors"] for r in report["kinds"].values())
    if errors:
        sys.exit(f"error: {errors} requests were not answered as they should be")
    return report


if __name__ == "__main__":
    main()
