"""`infer.py serve`: valid, oversized and malformed requests, several at once, streaming, and a clean
exit on SIGTERM. Every answer is checked against what minilm.inference.predict returns directly."""

import http.client
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from minilm.checkpoint import save_pretrained
from minilm.config import ModelConfig
from minilm.inference import predict, serve
from minilm.inference.predict import GenerationSettings
from minilm.inference.serve import Limits, make_server
from minilm.model.families import build_model
from test_scripts import corpus, decoder_ckpt, encoder_ckpt  # noqa: F401  (module fixtures)

ROOT = Path(__file__).resolve().parent.parent
LIMITS = Limits(max_body_bytes=4096, max_prompt_tokens=20, max_new_tokens=16, max_batch=8)


@pytest.fixture(scope="module")
def classifier_ckpt(tmp_path_factory, encoder_ckpt):
    """An untrained three-label classifier with the encoder's tokenizer: the answers' content is
    checked against minilm.inference.predict, not against the truth."""
    model, tk = predict.load(encoder_ckpt)
    config = ModelConfig(**{**model.config.__dict__, "head": "cls", "n_labels": 3, "labels": ["a", "b", "c"]})
    out = tmp_path_factory.mktemp("cls")
    save_pretrained(out, build_model(config).eval(), tokenizer=tk)
    return out


def serving(ckpt):
    """(server, model, tokenizer) while the test runs, on a free port; shut down after."""
    model, tk = predict.load(ckpt)
    server = make_server(model, tk, "127.0.0.1", 0, LIMITS, quiet=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, model, tk
    server.shutdown()
    server.server_close()


def request(server, method, path, body=None, raw: bytes | None = None, headers=None):
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    payload = response.read().decode()
    conn.close()
    return response.status, response.getheader("Content-Type"), payload


@pytest.fixture(scope="module")
def cls_server(classifier_ckpt):
    yield from serving(classifier_ckpt)


@pytest.fixture(scope="module")
def lm_server(decoder_ckpt):
    yield from serving(decoder_ckpt)


@pytest.fixture(scope="module")
def mlm_server(encoder_ckpt):
    yield from serving(encoder_ckpt)


def test_health_and_predict(cls_server):
    server, model, tk = cls_server
    status, kind, body = request(server, "GET", "/health")
    assert status == 200 and kind == "application/json"
    assert json.loads(body) == {"status": "ok", "arch": "encoder", "head": "cls", "can": "predict"}
    texts = ["the dog cat horse", "bread cheese apple", "a"]
    expected = predict.predict_texts(model, tk, texts, top=2)
    status, _, body = request(server, "POST", "/predict", {"texts": texts, "top": 2})
    assert status == 200 and json.loads(body) == {"results": expected}
    status, _, body = request(server, "POST", "/predict", {"text": texts[0]})
    assert status == 200 and json.loads(body)["label"] == expected[0]["label"]
    status, _, body = request(server, "POST", "/embed", {"text": "a dog"})
    assert status == 200 and len(json.loads(body)["embedding"]) == model.config.n_embd


@pytest.mark.parametrize("method, path, body, raw, status, message", [
    ("POST", "/predict", None, b"{not json", 400, "not valid JSON"),
    ("POST", "/predict", None, b"\xff\xfe", 400, "not valid JSON"),
    ("POST", "/predict", [1, 2], None, 400, "must be a JSON object"),
    ("POST", "/predict", {}, None, 400, 'exactly one of "text"'),
    ("POST", "/predict", {"text": 3}, None, 400, '"text" must be a string'),
    ("POST", "/predict", {"texts": []}, None, 400, "non-empty list"),
    ("POST", "/predict", {"texts": ["a"] * 9}, None, 413, "the limit is 8"),
    ("POST", "/predict", {"text": "a", "top": 0}, None, 400, '"top" must be a positive integer'),
    ("POST", "/predict", {"text": "a", "colour": 1}, None, 400, "unknown field(s) colour; /predict takes"),
    ("POST", "/embed", {"text": "a", "top": 1}, None, 400, "unknown field(s) top; /embed takes"),
    ("POST", "/predict", None, b'{"text": "' + b"a " * 4000 + b'"}', 413, "above the limit of 4096"),
    ("POST", "/generate", {"prompt": "a"}, None, 404, "can predict, not generate"),
    ("POST", "/nowhere", {"text": "a"}, None, 404, "no such endpoint"),
    ("GET", "/nowhere", None, None, 404, "no such endpoint"),
])
def test_bad_requests_get_json_errors(cls_server, method, path, body, raw, status, message):
    got, kind, payload = request(cls_server[0], method, path, body, raw)
    assert got == status and kind == "application/json"
    assert message in json.loads(payload)["error"]


def test_fill_mask_answers_as_the_cli(mlm_server):
    server, model, tk = mlm_server
    status, _, body = request(server, "GET", "/health")
    assert status == 200 and json.loads(body)["can"] == "fill-mask"
    texts = ["a animal like the dog cat [MASK] bird .", "the [MASK] [MASK] here"]
    status, _, body = request(server, "POST", "/fill-mask", {"texts": texts, "top_k": 3})
    assert status == 200 and json.loads(body) == {"results": predict.fill_mask(model, tk, texts, 3)}
    ids, _ = predict.target_ids(tk, ["dog", "cat"])
    status, _, body = request(server, "POST", "/fill-mask", {"text": texts[0], "targets": ["dog", "cat"]})
    assert status == 200 and json.loads(body) == predict.fill_mask(model, tk, texts[:1], 5, ids)[0]


@pytest.mark.parametrize("body, status, message", [
    ({"text": "a [MASK]", "top_k": 0}, 400, '"top_k" must be an integer from 1 to 100'),
    ({"text": "a [MASK]", "top_k": 101}, 400, '"top_k" must be an integer from 1 to 100'),
    ({"text": "a [MASK]", "top_k": True}, 400, '"top_k" must be an integer'),
    ({"text": "a [MASK]", "targets": "dog"}, 400, '"targets" must be a non-empty list of strings'),
    ({"text": "a [MASK]", "targets": []}, 400, '"targets" must be a non-empty list of strings'),
    ({"text": "a [MASK]", "targets": ["\u2603"]}, 400, "is not in the vocabulary"),
    ({"text": "a dog"}, 400, "no [MASK] in"),
    ({"text": "a [MASK]", "top": 1}, 400, "unknown field(s) top; /fill-mask takes"),
])
def test_bad_fill_mask_requests_get_json_errors(mlm_server, body, status, message):
    got, kind, payload = request(mlm_server[0], "POST", "/fill-mask", body)
    assert got == status and kind == "application/json"
    assert message in json.loads(payload)["error"]


def test_too_many_fill_mask_targets_are_refused(mlm_server, monkeypatch):
    monkeypatch.setattr(serve, "MAX_TARGETS", 3)  # 1,000 words would not fit the test server's 4,096-byte bodies
    got, _, payload = request(mlm_server[0], "POST", "/fill-mask", {"text": "a [MASK]", "targets": ["dog"] * 4})
    assert got == 413 and "4 targets in one request; the limit is 3" in json.loads(payload)["error"]


def test_a_classifier_server_has_no_fill_mask(cls_server):
    got, _, payload = request(cls_server[0], "POST", "/fill-mask", {"text": "a [MASK]"})
    assert got == 404 and "can predict, not fill-mask" in json.loads(payload)["error"]


def test_a_negative_content_length_is_answered_at_once(cls_server):
    with socket.create_connection(cls_server[0].server_address[:2], timeout=10) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):  # the server closes the connection after its answer
            answer += chunk
        answer = answer.decode()
    assert answer.startswith("HTTP/1.0 400") and "bad Content-Length '-1'" in answer


def test_an_oversized_body_sent_by_urllib_gets_the_413(cls_server):
    """urllib sends the whole body before it reads the answer: the server drops the rest of a body
    over the limit after answering, so the 413 reaches the client instead of a connection reset."""
    host, port = cls_server[0].server_address[:2]
    body = json.dumps({"text": "a " * (4 << 20)}).encode()  # 8 MiB: far past the limit and the socket buffers
    req = urllib.request.Request(f"http://{host}:{port}/predict", data=body, headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(req, timeout=30)
    assert answer.value.code == 413 and "above the limit of 4096" in json.loads(answer.value.read())["error"]
    assert request(cls_server[0], "POST", "/predict", {"text": "a"})[0] == 200  # and the server goes on


def test_a_body_announced_but_not_sent_holds_the_connection_a_bounded_time(cls_server, monkeypatch):
    monkeypatch.setattr(serve, "DRAIN_SECONDS", 1.0)
    with socket.create_connection(cls_server[0].server_address[:2], timeout=10) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n" + b"x" * 1000)
        start, answer = time.monotonic(), b""
        while chunk := sock.recv(4096):  # answered at once; closed once the wait for the rest runs out
            answer += chunk
    assert answer.startswith(b"HTTP/1.0 413") and b"above the limit of 4096" in answer
    assert time.monotonic() - start < 5


def test_a_failure_inside_the_server_is_a_json_500_and_the_server_goes_on(cls_server, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("something broke")

    monkeypatch.setattr(predict, "predict_texts", broken)
    status, kind, body = request(cls_server[0], "POST", "/predict", {"text": "a"})
    assert status == 500 and kind == "application/json" and "RuntimeError: something broke" in json.loads(body)["error"]
    monkeypatch.undo()
    assert request(cls_server[0], "POST", "/predict", {"text": "a"})[0] == 200


def test_requests_at_once_get_their_own_answers(cls_server):
    server, model, tk = cls_server
    texts = [f"the dog {'cat ' * i}here" for i in range(12)]
    expected = predict.predict_texts(model, tk, texts)
    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(lambda t: request(server, "POST", "/predict", {"text": t}), texts))
    assert [a[0] for a in answers] == [200] * 12
    got = [json.loads(a[2]) for a in answers]
    assert [g["label"] for g in got] == [e["label"] for e in expected]  # each answer is its own text's
    # one text alone and in a batch differ by float rounding only (mean pooling sums in another order)
    assert [g["probability"] for g in got] == pytest.approx([e["probability"] for e in expected], abs=1e-6)


def test_generate_plain_streamed_and_bounded(lm_server):
    server, model, tk = lm_server
    settings = GenerationSettings(max_new_tokens=12, greedy=True)
    expected = predict.generate_texts(model, tk, ["a food like"], settings)[0]
    status, _, body = request(server, "POST", "/generate", {"prompt": "a food like", "max_new_tokens": 12, "greedy": True})
    assert status == 200 and json.loads(body) == expected
    status, kind, body = request(server, "POST", "/generate", {"prompt": "a food like", "max_new_tokens": 12, "greedy": True,
                                                               "stream": True})
    events = [json.loads(line[len("data: "):]) for line in body.split("\n\n") if line]
    assert status == 200 and kind == "text/event-stream"
    assert events[-1] == {"done": True, **expected} and "".join(e["text"] for e in events[:-1]) == expected["text"]
    assert len(events) > 2  # it came in pieces
    status, _, body = request(server, "POST", "/generate", {"prompts": ["a", "a tool like"], "max_new_tokens": 4, "seed": 1})
    assert status == 200 and len(json.loads(body)["results"]) == 2
    for bad, message in [
        ({"prompt": "a", "max_new_tokens": 17}, "above this server's limit of 16"),
        ({"prompt": "a " * 30}, "above this server's limit of 20"),
        ({"prompt": "a", "temperature": "hot"}, '"temperature" must be a number'),
        ({"prompt": "a", "top_p": 2.0}, "top_p must be in (0, 1]"),
        ({"prompt": "a", "colour": 1}, "unknown field(s) colour"),
        ({"prompt": ""}, "prompt 1 of 1 is empty"),
        ({"prompt": "a", "num_beams": 9}, "num_beams=9 is above this server's limit of 8"),
        ({"prompt": "a", "stop": "x" * 257}, "at most 16 stop strings of at most 256 characters"),
        ({"prompt": "", "stream": True}, "prompt 1 of 1 is empty"),
        ({"prompt": "a", "temperature": float("nan")}, "temperature must be a finite number"),
        ({"prompts": ["a", "b"], "stream": True}, '"stream" takes one "prompt"'),
    ]:
        status, _, body = request(server, "POST", "/generate", bad)
        assert status == 400 and message in json.loads(body)["error"], bad


def test_serve_binds_to_localhost_and_exits_cleanly_on_sigterm(classifier_ckpt):
    proc = subprocess.Popen([sys.executable, str(ROOT / "infer.py"), "serve", "--ckpt", str(classifier_ckpt), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://([\d.]+):(\d+)", line)
        assert match and match.group(1) == "127.0.0.1", line
        idle = socket.create_connection((match.group(1), int(match.group(2))))  # open, never used: must not delay the exit
        conn = http.client.HTTPConnection(match.group(1), int(match.group(2)), timeout=30)
        conn.request("GET", "/health")  # answered after the idle connection was accepted (accept is first come, first served)
        assert conn.getresponse().status == 200
        conn.close()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        idle.close()
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "SIGTERM" in out and "stopped" in out


def test_the_server_packs_its_weights_once_not_per_request(tmp_path, monkeypatch):
    """Decoding prepacks every large Linear weight for oneDNN (kernels/packed_linear.py); a server
    does it once when it starts, and its /generate calls reuse the packed copies."""
    from kernels import packed_linear
    from minilm.tokenizer import Tokenizer

    if not packed_linear.available():
        pytest.skip("this torch has no oneDNN")
    calls = []
    real = packed_linear.packed_linear
    monkeypatch.setattr(packed_linear, "packed_linear", lambda w, b=None: calls.append(w.shape) or real(w, b))
    tk = Tokenizer.train([["a dog barks", "a cat sleeps"]] * 5, kind="bpe", vocab_size=300)
    model = build_model(ModelConfig(arch="decoder", head="lm", vocab_size=tk.vocab_size, n_layer=1, n_head=4, n_embd=384, max_seq_len=32)).eval()
    server = make_server(model, tk, "127.0.0.1", 0, LIMITS, quiet=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        packed = len(calls)
        assert packed == 6  # q, k, v, o and the MLP's two; the 300 x 384 head is below MIN_PACKED
        for _ in range(3):
            status, _, payload = request(server, "POST", "/generate", {"prompt": "a dog", "max_new_tokens": 3, "greedy": True})
            assert status == 200, payload
        assert len(calls) == packed  # no packing per request
        expected = predict.generate_texts(model, tk, ["a dog"], GenerationSettings(max_new_tokens=3, greedy=True))[0]["tokens"]
        assert json.loads(payload)["tokens"] == expected
    finally:
        server.shutdown()
        server.server_close()
    assert all("forward" not in m.__dict__ for m in model.modules())  # closed: the layers' own forward again


def test_a_short_load_run_answers_every_request(tmp_path):
    """bench/serve_load.py, short: 4 clients x 15 mixed requests (malformed ones among them) against
    the shipped checkpoints' servers while 100 idle connections are held to each."""
    from conftest import load_file

    load = load_file(ROOT / "bench" / "serve_load.py", "serve_load")
    report = load.run(load.parse_args(["--clients", "4", "--requests", "15", "--idle", "100", "--out", str(tmp_path / "load.json")]))
    assert {k: r["errors"] for k, r in report["kinds"].items()} == {"embed": 0, "generate": 0, "malformed": 0, "predict": 0}
    assert sum(r["requests"] for r in report["kinds"].values()) == 60
    for name in ("lm", "cls"):
        assert report["rss_mib_after"][name] < report["rss_mib_before"][name] + 100
