"""A local HTTP JSON API over one checkpoint (`infer.py serve`), on Python's standard library.

    GET  /health     {"status": "ok", "arch", "head", "can": "generate" | "predict" | "fill-mask" | "embed"}
    POST /generate   {"prompt": str} or {"prompts": [str]}, and optionally "max_new_tokens", "greedy",
                     "temperature", "top_k", "top_p", "repetition_penalty", "num_beams", "length_penalty",
                     "stop", "seed", "stream"
                     -> {"text", "tokens"} (or {"results": [...]} for "prompts"); with "stream": true, a
                     text/event-stream of `data: {"text": piece}` events, then `data: {"done": true, "text", "tokens"}`
    POST /predict    {"text": str} or {"texts": [str]} (and "pair", "top") -> one result or {"results": [...]}
    POST /fill-mask  {"text": str} or {"texts": [str]} with [MASK]s, and optionally "top_k" (at most 100)
                     and "targets" (candidate words, at most 1,000) -> {"text", "masks"} or {"results": [...]}
    POST /embed      {"text": str} or {"texts": [str]} -> {"embedding"} or {"embeddings": [...]}

It binds to 127.0.0.1 unless told otherwise. Request bodies, batch sizes, prompt lengths,
max_new_tokens, num_beams and stop strings are bounded (`Limits`); errors are JSON `{"error": ...}`
with a 4xx code (500 for a failure inside the server; an `{"error"}` event inside a stream). A body
over the limit is answered 413 at once, then the rest of it is read and dropped (up to DRAIN_BYTES,
for up to DRAIN_SECONDS) before the connection closes, as nginx's lingering close does: a client
that sends its whole body before reading (urllib, requests) then reads the 413, where closing on
unread data would reset the connection under it. Requests
are served on threads; the model answers one at a time (one lock), so the answers are those of
the CLI. SIGTERM or SIGINT stop accepting, let the requests in flight finish, and exit.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from dataclasses import dataclass, fields
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch

from kernels.packed_linear import packed_linears
from minilm.inference import predict
from minilm.inference.predict import GenerationSettings


@dataclass
class Limits:
    max_body_bytes: int = 1 << 20
    max_prompt_tokens: int = 512
    max_new_tokens: int = 256
    max_batch: int = 64
    max_beams: int = 8
    max_stops: int = 16  # stop strings per request
    max_stop_chars: int = 256  # characters per stop string


MAX_TOP_K = 100  # candidates per mask a /fill-mask request may ask for
MAX_TARGETS = 1000  # candidate words in one /fill-mask request
DRAIN_BYTES = 64 << 20  # the most of an oversized body read (and dropped) after its 413
DRAIN_SECONDS = 10.0  # ... and the longest time spent reading it


class BadRequest(Exception):
    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST):
        super().__init__(message)
        self.status = status


SETTING_TYPES = {f.name: f.type for f in fields(GenerationSettings)}


def texts_of(body: dict, one: str, many: str, limits: Limits) -> tuple[list[str], bool]:
    """The request's texts and whether it sent a list: {"text": s} or {"texts": [s, ...]}."""
    if (one in body) == (many in body):
        raise BadRequest(f'give exactly one of "{one}" (a string) or "{many}" (a list of strings)')
    texts = [body[one]] if one in body else body[many]
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise BadRequest(f'"{many}" must be a non-empty list of strings' if many in body else f'"{one}" must be a string')
    if len(texts) > limits.max_batch:
        raise BadRequest(f"{len(texts)} texts in one request; the limit is {limits.max_batch}", HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
    return texts, many in body


def only(body: dict, endpoint: str, *known: str) -> None:
    """Refuse fields the endpoint does not take (a misspelt "max_new_token" must not pass unseen)."""
    unknown = sorted(set(body) - set(known))
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(unknown)}; {endpoint} takes {', '.join(sorted(known))}")


def settings_of(body: dict, limits: Limits) -> GenerationSettings:
    """GenerationSettings from the request's fields, type-checked and bounded."""
    only(body, "/generate", *SETTING_TYPES, "prompt", "prompts", "stream")
    values = {}
    for name in SETTING_TYPES:
        if name not in body or body[name] is None:
            continue
        v = body[name]
        if name == "stop":
            v = [v] if isinstance(v, str) else v
            if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
                raise BadRequest('"stop" must be a string or a list of strings')
        elif name == "greedy":
            if not isinstance(v, bool):
                raise BadRequest('"greedy" must be true or false')
        elif name in ("max_new_tokens", "top_k", "num_beams", "seed"):
            if not isinstance(v, int) or isinstance(v, bool):
                raise BadRequest(f'"{name}" must be an integer')
        elif not isinstance(v, (int, float)) or isinstance(v, bool):
            raise BadRequest(f'"{name}" must be a number')
        values[name] = v
    values.setdefault("max_new_tokens", min(GenerationSettings.max_new_tokens, limits.max_new_tokens))
    settings = GenerationSettings(**values)
    if settings.max_new_tokens > limits.max_new_tokens:
        raise BadRequest(f"max_new_tokens={settings.max_new_tokens} is above this server's limit of {limits.max_new_tokens}")
    if len(settings.stop) > limits.max_stops or any(len(x) > limits.max_stop_chars for x in settings.stop):
        raise BadRequest(f"at most {limits.max_stops} stop strings of at most {limits.max_stop_chars} characters each")
    if settings.num_beams > limits.max_beams:
        raise BadRequest(f"num_beams={settings.num_beams} is above this server's limit of {limits.max_beams}")
    try:
        return settings.check()
    except ValueError as e:
        raise BadRequest(str(e)) from None


class Handler(BaseHTTPRequestHandler):
    server_version = "minilm"
    timeout = 60  # seconds a client may take to send its request

    # the server object carries model, tokenizer, lock and limits
    def log_message(self, format, *args):  # one line per request on stderr, as the standard library does
        if not self.server.quiet:
            super().log_message(format, *args)

    def send_json(self, status: HTTPStatus, payload: dict):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def handle_one_request(self):
        """One request, counted as in flight from its first byte to its answer; a connection kept
        open and idle between requests is not (it does not hold up the exit)."""
        try:
            if not self.rfile.peek(1):  # the client closed the connection
                self.close_connection = True
                return
        except (TimeoutError, ConnectionError):  # idle past Handler.timeout, or reset
            self.close_connection = True
            return
        if not self.server.in_flight.enter():  # the server is stopping: the connection is closed unanswered
            self.close_connection = True
            return
        try:
            super().handle_one_request()
        finally:
            self.server.in_flight.leave()

    def do_GET(self):
        if self.path != "/health":
            return self.send_json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint: GET {self.path}"})
        c = self.server.model.config
        self.send_json(HTTPStatus.OK, {"status": "ok", "arch": c.arch, "head": c.head, "can": predict.kind(self.server.model)})

    def do_POST(self):
        self.streaming = False  # set once a stream's headers are sent: no other answer may follow
        self.unread = 0  # bytes of the body left unread when it is refused for its size
        routes = {"/generate": self.generate, "/predict": self.predict, "/fill-mask": self.fill_mask, "/embed": self.embed}
        try:
            if self.path not in routes:
                raise BadRequest(f"no such endpoint: POST {self.path} (try {', '.join(routes)})", HTTPStatus.NOT_FOUND)
            routes[self.path](self.read_body())
        except BadRequest as e:
            self.answer_error(e.status, str(e))
        except ValueError as e:  # the model refused the input (for example a prompt past its positions)
            self.answer_error(HTTPStatus.BAD_REQUEST, str(e))
        except ConnectionError:  # the client went away: nobody to answer
            self.close_connection = True
        except Exception as e:  # a bug: the client still gets an answer (unless a stream has begun), and the server goes on
            self.log_error("%s while answering POST %s", repr(e), self.path)
            self.close_connection = True
            if not self.streaming:
                self.answer_error(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {type(e).__name__}: {e}")
        if self.unread:
            self.drain(self.unread)

    def drain(self, n: int):
        """Read and drop up to n more bytes of the request (at most DRAIN_BYTES, for at most
        DRAIN_SECONDS, stopping early when the client closes): closing a socket with unread data
        resets the connection, and a client still sending would lose the answer already sent."""
        n, deadline = min(n, DRAIN_BYTES), time.monotonic() + DRAIN_SECONDS
        try:
            while n > 0 and (left := deadline - time.monotonic()) > 0:
                self.connection.settimeout(left)
                chunk = self.rfile.read1(min(n, 1 << 16))
                if not chunk:  # the client closed its side
                    break
                n -= len(chunk)
        except OSError:  # timed out, or reset: the connection is closed all the same
            pass

    def answer_error(self, status: HTTPStatus, message: str):
        try:
            self.send_json(status, {"error": message})
        except ConnectionError:  # the client left before its answer
            self.close_connection = True

    def read_body(self) -> dict:
        header = self.headers.get("Content-Length")
        if header is None:
            raise BadRequest("a request body with Content-Length is required", HTTPStatus.LENGTH_REQUIRED)
        try:
            length = int(header)
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True  # where this request's body ends is unknown
            raise BadRequest(f"bad Content-Length {header!r}") from None
        if length > self.server.limits.max_body_bytes:
            self.close_connection = True  # the unread body must not be taken for the next request
            self.unread = length  # read and dropped after the answer (drain)
            raise BadRequest(f"request body of {length} bytes is above the limit of {self.server.limits.max_body_bytes}",
                             HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        try:
            body = json.loads(self.rfile.read(length).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BadRequest(f"the body is not valid JSON ({e})") from None
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        return body

    def require(self, can: str):
        have = predict.kind(self.server.model)
        if have != can and can != "embed":
            raise BadRequest(f"this server's model can {have}, not {can}", HTTPStatus.NOT_FOUND)

    def generate(self, body: dict):
        self.require("generate")
        s = self.server
        prompts, many = texts_of(body, "prompt", "prompts", s.limits)
        settings = settings_of(body, s.limits)
        for ids in predict.prompt_ids(s.model, s.tokenizer, prompts):  # an empty prompt refused before a stream's headers go out
            n = len(ids) - (s.model.config.arch == "encoder-decoder" and s.tokenizer.eos_id is not None)  # the source's EOS is not the client's
            if n > s.limits.max_prompt_tokens:
                raise BadRequest(f"prompt of {n} tokens is above this server's limit of {s.limits.max_prompt_tokens}")
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise BadRequest('"stream" must be true or false')
        if stream and (many or settings.num_beams > 1):
            raise BadRequest('"stream" takes one "prompt" and no beam search')
        if not stream:
            with s.lock:
                results = predict.generate_texts(s.model, s.tokenizer, prompts, settings)
            return self.send_json(HTTPStatus.OK, {"results": results} if many else results[0])
        self.streaming = True
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.close_connection = True  # the stream's end is the connection's end

        def event(payload):
            self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
            self.wfile.flush()

        with s.lock:
            try:
                result = predict.generate_texts(s.model, s.tokenizer, prompts, settings, lambda piece: event({"text": piece}))[0]
            except ConnectionError:  # the client went away mid-stream
                raise
            except Exception as e:  # a ValueError: the model refused the input; anything else is a bug, answered all the same
                if not isinstance(e, ValueError):
                    self.log_error("%s while streaming /generate", repr(e))
                return event({"error": str(e) if isinstance(e, ValueError) else f"internal error: {type(e).__name__}: {e}"})
        event({"done": True, **result})

    def predict(self, body: dict):
        self.require("predict")
        s = self.server
        only(body, "/predict", "text", "texts", "pair", "top")
        texts, many = texts_of(body, "text", "texts", s.limits)
        pair, top = body.get("pair"), body.get("top", 1)
        if pair is not None and not isinstance(pair, str):
            raise BadRequest('"pair" must be a string')
        if not isinstance(top, int) or isinstance(top, bool) or top < 1:
            raise BadRequest('"top" must be a positive integer')
        if pair is None and predict.needs_pair(s.model):
            raise BadRequest('this model compares text pairs (a bi-encoder): give "pair", the second text')
        with s.lock:
            results = predict.predict_texts(s.model, s.tokenizer, texts, pair, top)
        self.send_json(HTTPStatus.OK, {"results": results} if many else results[0])

    def fill_mask(self, body: dict):
        self.require("fill-mask")
        s = self.server
        only(body, "/fill-mask", "text", "texts", "top_k", "targets")
        texts, many = texts_of(body, "text", "texts", s.limits)
        top_k, words = body.get("top_k", 5), body.get("targets")
        if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= MAX_TOP_K:
            raise BadRequest(f'"top_k" must be an integer from 1 to {MAX_TOP_K}')
        targets = None
        if words is not None:
            if not isinstance(words, list) or not words or not all(isinstance(w, str) for w in words):
                raise BadRequest('"targets" must be a non-empty list of strings')
            if len(words) > MAX_TARGETS:
                raise BadRequest(f"{len(words)} targets in one request; the limit is {MAX_TARGETS}", HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
            targets, _ = predict.target_ids(s.tokenizer, words)  # a split word is scored by its first piece: the answer names it
        with s.lock:
            results = predict.fill_mask(s.model, s.tokenizer, texts, top_k, targets)
        self.send_json(HTTPStatus.OK, {"results": results} if many else results[0])

    def embed(self, body: dict):
        s = self.server
        only(body, "/embed", "text", "texts")
        texts, many = texts_of(body, "text", "texts", s.limits)
        with s.lock:
            vectors = predict.embed_texts(s.model, s.tokenizer, texts).tolist()
        self.send_json(HTTPStatus.OK, {"embeddings": vectors} if many else {"embedding": vectors[0]})


class InFlight:
    """A count of the requests being answered; once `close` is called no new one is taken, and
    `close` returns when the count reaches zero."""

    def __init__(self):
        self.count, self.closed, self.zero = 0, False, threading.Condition()

    def enter(self) -> bool:
        """Count a new request in; False once closing (the request is not to be answered)."""
        with self.zero:
            if self.closed:
                return False
            self.count += 1
            return True

    def leave(self):
        with self.zero:
            self.count -= 1
            self.zero.notify_all()

    def close(self):
        with self.zero:
            self.closed = True
            self.zero.wait_for(lambda: self.count == 0)


class Server(ThreadingHTTPServer):
    daemon_threads = True  # idle connections die with the process; requests in flight are waited for (InFlight)
    block_on_close = False
    request_queue_size = 128  # connections waiting to be accepted (the standard library's 5 drops bursts of clients)

    def server_close(self):
        super().server_close()
        self.packing.close()  # the model's layers take their own forward again


def make_server(model, tokenizer, host: str = "127.0.0.1", port: int = 8000, limits: Limits | None = None, quiet=False) -> Server:
    """A server over `model`, which it owns while it runs: its Linear weights are prepacked for
    oneDNN once, here (kernels/packed_linear.py), not again on every /generate."""
    server = Server((host, port), Handler)
    server.model, server.tokenizer, server.limits, server.quiet = model.eval(), tokenizer, limits or Limits(), quiet
    server.lock, server.in_flight = threading.Lock(), InFlight()
    server.packing = contextlib.ExitStack()
    with torch.inference_mode():
        server.packing.enter_context(packed_linears(server.model))
    return server


def serve(model, tokenizer, host: str = "127.0.0.1", port: int = 8000, limits: Limits | None = None):
    """Serve until SIGTERM or SIGINT; then finish the requests in flight and return."""
    server = make_server(model, tokenizer, host, port, limits)

    def stop(signum, frame):
        print(f"{signal.Signals(signum).name}: finishing the requests in flight, then exiting", flush=True)
        threading.Thread(target=server.shutdown).start()  # shutdown() waits for serve_forever, so not on its thread

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    h, p = server.server_address[:2]
    print(f"serving {predict.kind(model)} on http://{h}:{p} (GET /health; POST /generate, /predict, /fill-mask, /embed)", flush=True)
    server.serve_forever()
    server.server_close()
    server.in_flight.close()
    print("stopped", flush=True)
