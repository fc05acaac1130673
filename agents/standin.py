"""An OpenAI-compatible stand-in model server for tests and benchmarks (no model, fixed latency).

It serves ``POST /v1/chat/completions`` and ``GET /v1/models`` on 127.0.0.1 (Starlette + uvicorn),
waits a fixed ``latency_s`` per request with an async sleep (so hundreds of requests can be in
flight at once), and answers with JSON that validates against the schema the request carries, in
whichever structured mode the gateway uses (``agents.llm.structured_mode``): a forced tool call
(``tools`` + ``tool_choice``), ``response_format`` json_schema (strict), or llama-cpp-python's
``json_object`` + ``schema``. Streamed requests (``stream: true``) get server-sent events.

Answers are built from the JSON schema generically (``fake_value``): enums take a configured
choice (``choices``, by property name: verdict accept, decision keep), numbers the top of their
range, strings short unique names within ``maxLength`` (a string with no length bound echoes the
first ``<untrusted>`` block of the prompt: a rewrite returns its paragraph), arrays ``minItems``
items within ``maxItems``. ``answers`` overrides the answer per schema name or per text in the
prompt; ``DEFAULT_ANSWERS`` makes the project's own prompts give a build something usable
(queries naming the knowledge point, a taxonomy under the asked subjects).

A request whose user message carries images (``image_url`` parts with base64 data URLs, as a vision
model gets keyframes) and asks for no schema is answered with a caption (``captioner``, by default
``ocr_caption``: tesseract reads each image, and the caption names the words it found, or says the
frame shows no readable text), so a test can tell a slide that matches the speech from one that does
not by what is really on the frames.

Faults (``Fault``) are injected per request number, every n-th request, or per text in the prompt:
``timeout`` (no answer for ``delay_s`` seconds), ``429`` (with ``Retry-After``), ``503``, ``500``,
``garbage`` (a 200 answer whose content is not JSON). It counts requests, requests in flight now
and at the peak (``current``, ``peak``; also ``GET /stats``).

In a test::

    with StandIn(latency_s=0.2, faults=[Fault("429", match="lesson 3", times=1)]) as srv:
        cfg = LLMConfig(base_url=srv.base_url, model="standin", structured="json_schema")
        ...
        assert srv.peak >= 8

From a shell: ``python -m agents.standin --latency 2 --port 8099 --fault 429@3 --fault garbage~Newton``
(``--choice verdict=reject``: every judge rejects).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

FAULT_KINDS = ("timeout", "429", "503", "500", "garbage")


@dataclass
class Fault:
    """One injected fault. It applies to a chat request when any trigger given matches: ``requests``
    (1-based numbers of chat requests), ``every`` (every n-th request), ``match`` (a substring of any
    message, case-sensitive); with no trigger, to every request. ``times``: at most that many times
    (None: always). ``delay_s``: how long a ``timeout`` holds the request, in seconds (it ends early
    when the client hangs up). ``retry_after_s``: the 429's ``Retry-After`` header, in seconds."""

    kind: str
    match: str | None = None
    requests: tuple[int, ...] = ()
    every: int | None = None
    times: int | None = None
    delay_s: float = 30.0
    retry_after_s: float = 0.2
    fired: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r} (one of {', '.join(FAULT_KINDS)})")

    def applies(self, number: int, text: str) -> bool:
        """Whether the fault fires on request ``number`` (1-based) whose prompt is ``text``: any of its triggers holds
        (no trigger: every request), until it has fired ``times`` times."""
        if self.times is not None and self.fired >= self.times:
            return False
        triggers = [number in self.requests if self.requests else None,
                    number % self.every == 0 if self.every else None,
                    self.match in text if self.match is not None else None]
        given = [t for t in triggers if t is not None]
        return any(given) if given else True


Answerer = Callable[[str, dict], Any]  # (prompt text, JSON schema) -> the answer's value


# -- answers from a JSON schema ----------------------------------------------------------

_PREFERRED = ("accept", "keep", "yes", True)


def _singular(name: str) -> str:
    name = name.rstrip("s") if name.endswith("s") and not name.endswith("ss") else name
    return name.replace("_", " ").capitalize() or "Item"


def _content_text(content: Any) -> str:
    """A message's text: the content, or its text parts joined (images left out)."""
    if isinstance(content, list):
        return "\n".join(str(p.get("text") or "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return str(content or "")


def _images(body: dict) -> list[bytes]:
    """The images of a chat request: each ``image_url`` part's base64 data URL, decoded, in order. Raises
    ValueError for an image part that is not a base64 data URL (the stand-in fetches nothing)."""
    import base64

    out = []
    for m in body.get("messages", []):
        for p in m.get("content") if isinstance(m.get("content"), list) else []:
            if isinstance(p, dict) and p.get("type") == "image_url":
                url = str((p.get("image_url") or {}).get("url") or "")
                head, sep, data = url.partition(",")
                if not (sep and head.startswith("data:") and head.endswith(";base64")):
                    raise ValueError(f"an image that is not a base64 data URL: {url[:40]!r}")
                out.append(base64.b64decode(data, validate=True))
    return out


def ocr_caption(images: list[bytes]) -> str:
    """A caption as a vision model might write it, from what tesseract reads on the images: "N keyframes.
    Frame 1: a slide with the text "...". Frame 2: no readable text (a picture or a person, no slide)."
    Raises tools.errors.ToolError when tesseract is missing or an image cannot be read."""
    import tempfile
    from pathlib import Path

    from tools.ocr import TesseractOCR

    with tempfile.TemporaryDirectory(prefix="standin-caption-") as tmp:
        paths = []
        for i, data in enumerate(images):
            paths.append(Path(tmp) / f"frame{i}.img")
            paths[-1].write_bytes(data)
        read = TesseractOCR().read_many(paths)
    said = []
    for i, r in enumerate(read, 1):
        words = " ".join(r.text.split())
        said.append(f'Frame {i}: a slide with the text "{words}".' if len(words) >= 3 else
                    f"Frame {i}: no readable text (a picture or a person, no slide).")
    return f"{len(images)} keyframe{'s' if len(images) != 1 else ''}. " + " ".join(said)


def _untrusted(text: str) -> str | None:
    m = re.search(r"<untrusted[^>]*>\n?(.*?)\n?</untrusted>", text, re.S)
    return m.group(1).strip() if m else None


class _Faker:
    def __init__(self, root: dict, text: str, choices: dict[str, Any]):
        self.defs = root.get("$defs") or root.get("definitions") or {}
        self.text = text
        self.choices = choices
        self.n = 0

    def resolve(self, node: dict) -> dict:
        while "$ref" in node:
            node = {**self.defs[node["$ref"].split("/")[-1]], **{k: v for k, v in node.items() if k != "$ref"}}
        return node

    def value(self, node: dict, prop: str, label: str) -> Any:
        node = self.resolve(node)
        if "const" in node:
            return node["const"]
        for key in ("anyOf", "oneOf"):
            if key in node:
                options = [self.resolve(o) for o in node[key]]
                return self.value(next((o for o in options if o.get("type") != "null"), options[0]), prop, label)
        if "allOf" in node:
            merged: dict = {}
            for part in node["allOf"]:
                merged |= self.resolve(part)
            return self.value(merged, prop, label)
        if "enum" in node:
            values = node["enum"]
            if prop in self.choices and self.choices[prop] in values:
                return self.choices[prop]
            if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
                return max(values)
            return next((v for v in _PREFERRED if v in values), values[0])
        if prop in self.choices:
            return self.choices[prop]
        kind = node.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind == "object" or "properties" in node:
            return {k: self.value(v, k, _singular(k) if k != "name" else label)
                    for k, v in node.get("properties", {}).items()}
        if kind == "array":
            lo = int(node.get("minItems", 1))
            hi = node.get("maxItems")
            count = max(lo, 1) if hi is None else min(max(lo, 1), int(hi))
            item_label = _singular(prop) if prop else label
            return [self.value(node.get("items", {}), prop, item_label) for _ in range(count)]
        if kind in ("integer", "number"):
            hi, lo = node.get("maximum"), node.get("minimum")
            if node.get("exclusiveMaximum") is not None:
                hi = node["exclusiveMaximum"] - 1
            out = hi if hi is not None else lo if lo is not None else 1
            return int(out) if kind == "integer" else float(out)
        if kind == "boolean":
            return True
        if kind == "null":
            return None
        return self.string(node, label)

    def string(self, node: dict, label: str) -> str:
        cap = node.get("maxLength")
        if cap is None:
            echoed = _untrusted(self.text)
            if echoed:
                return echoed
        self.n += 1
        text = f"{label or 'Item'} {_letters(self.n)}"
        lo = int(node.get("minLength", 1))
        if cap is not None:
            text = text[:int(cap)]
        return text + "x" * max(0, lo - len(text))


def _letters(n: int) -> str:
    """1 -> alpha, 2 -> bravo, ... then alpha bravo, ...: unique words, no digits."""
    words = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
             "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango")
    out = []
    n -= 1
    while True:
        out.append(words[n % len(words)])
        n = n // len(words) - 1
        if n < 0:
            return " ".join(reversed(out))


def fake_value(schema: dict, text: str = "", choices: dict[str, Any] | None = None) -> Any:
    """A value that validates against the JSON schema ``schema`` (``$defs``/``$ref``, enums, ranges,
    ``minItems``/``maxItems``, ``maxLength``), built as the module docstring says; ``text`` is the
    prompt (a long string echoes its first untrusted block)."""
    return _Faker(schema, text, {**DEFAULT_CHOICES, **(choices or {})}).value(schema, "", "Item")


DEFAULT_CHOICES: dict[str, Any] = {"verdict": "accept", "decision": "keep", "language": "en", "level": "middle school"}


def _queries(text: str, schema: dict) -> dict:
    """Queries naming the knowledge point (the last part of the path in the prompt)."""
    m = re.search(r"knowledge point:\s*\n(.+)", text)
    point = m.group(1).split(">")[-1].strip() if m else "lesson"
    n = int(schema.get("properties", {}).get("queries", {}).get("minItems", 1))
    return {"queries": [point + (" lesson" if i == 0 else f" lesson {_letters(i + 1)}") for i in range(n)]}


def _goal(text: str, schema: dict) -> dict:
    m = re.search(r'asked for: "(.*?)"', text)
    goal = m.group(1) if m else ""
    words = [w for w in re.findall(r"[A-Za-z]{3,}", goal) if w.lower() not in {"build", "textbook", "make", "the"}]
    subject = (words[0] if words else "Science").capitalize()
    return {"title": f"{subject} textbook"[:80], "subjects": [subject], "level": "middle school", "language": "en"}


def _taxonomy(text: str, schema: dict) -> dict:
    """The generic taxonomy with the subjects the prompt names."""
    value = fake_value(schema, text)
    m = re.search(r"Subjects: (.+?)\.\s*$", text, re.M)
    names = [s.strip() for s in m.group(1).split(",")] if m else []
    for subject, name in zip(value.get("subjects", []), names, strict=False):
        if sum(ch.isalpha() for ch in name) >= 3:
            subject["name"] = name[:80]
    return value


DEFAULT_ANSWERS: dict[str, Answerer] = {"Queries": _queries, "GoalSpec": _goal, "Taxonomy": _taxonomy}


# -- the server ----------------------------------------------------------------------------

class StandIn:
    """The stand-in server; see the module docstring. ``latency_s``: seconds each request waits before
    its answer. ``answers``: schema name or prompt substring -> a dict (the answer) or a function
    ``(prompt text, schema) -> answer`` (schema names first; then substrings, first match wins; a
    request without a schema answers text). ``choices``: enum and string values by property name.
    ``faults``: injected faults, first match wins. ``port`` 0: a free port. Use as a context manager
    (a background thread) or call ``serve_forever``. Counters are safe to read from any thread."""

    def __init__(self, latency_s: float = 0.0, faults: list[Fault] | None = None,
                 answers: dict[str, Any] | None = None, choices: dict[str, Any] | None = None,
                 model: str = "standin", host: str = "127.0.0.1", port: int = 0,
                 captioner: Callable[[list[bytes]], str] | None = None):
        self.latency_s = latency_s
        self.captioner = captioner or ocr_caption  # images -> the caption of a request that sends images
        self.faults = list(faults or [])
        self.answers = {**DEFAULT_ANSWERS, **(answers or {})}
        self.choices = {**DEFAULT_CHOICES, **(choices or {})}
        self.model = model
        self._lock = threading.Lock()
        self.requests = 0          # chat requests received
        self.current = 0           # chat requests in flight now
        self.peak = 0              # most chat requests in flight at once
        self.fired: dict[str, int] = {}  # faults injected, by kind
        self.log: list[dict] = []  # per chat request: number, schema name, fault kind or None, images sent
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # accepted connections inherit it: uvicorn writes a response's headers and body apart, and Nagle
        # plus the client's delayed ACK would hold every answer ~40 ms (the latency is ``latency_s`` only)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.bind((host, port))
        self._sock.listen(4096)  # connections wait in the backlog until the server runs
        self.host, self.port = self._sock.getsockname()[:2]
        self.base_url = f"http://{self.host}:{self.port}/v1"
        self._server = None
        self._thread: threading.Thread | None = None

    def reset_peak(self) -> None:
        """Start counting the peak again from the requests in flight now."""
        with self._lock:
            self.peak = self.current

    def stats(self) -> dict:
        """Requests served, in flight now and at most at once (the peak), and faults fired per kind."""
        with self._lock:
            return {"requests": self.requests, "current": self.current, "peak": self.peak, "faults": dict(self.fired)}

    # -- the ASGI app --

    def app(self):
        """The Starlette app: ``/v1/models`` and ``/v1/chat/completions`` (also without ``/v1``: answers that fit
        the request's JSON schema, after ``latency_s``, faults injected) and ``/stats`` (GET; POST resets the peak)."""
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        async def models(request):
            return JSONResponse({"object": "list", "data": [{"id": self.model, "object": "model",
                                                             "owned_by": "standin"}]})

        async def stats(request):
            if request.method == "POST":
                self.reset_peak()
            return JSONResponse(self.stats())

        return Starlette(routes=[Route("/v1/models", models), Route("/models", models),
                                 Route("/v1/chat/completions", self._chat, methods=["POST"]),
                                 Route("/chat/completions", self._chat, methods=["POST"]),
                                 Route("/stats", stats, methods=["GET", "POST"])])

    async def _chat(self, request):
        from starlette.responses import JSONResponse

        body = await request.json()
        text = "\n".join(_content_text(m.get("content")) for m in body.get("messages", []))
        with self._lock:
            self.requests += 1
            number = self.requests
            self.current += 1
            self.peak = max(self.peak, self.current)
            fault = next((f for f in self.faults if f.applies(number, text)), None)
            if fault is not None:
                fault.fired += 1
                self.fired[fault.kind] = self.fired.get(fault.kind, 0) + 1
        streaming = False
        try:
            if self.latency_s > 0:
                await asyncio.sleep(self.latency_s)
            name, schema, mode = _requested(body)
            try:
                images = _images(body)
            except ValueError as exc:
                return JSONResponse({"error": {"message": str(exc), "type": "invalid_request_error"}},
                                    status_code=400)
            with self._lock:
                self.log.append({"number": number, "schema": name, "fault": fault.kind if fault else None,
                                 "images": len(images)})
            if fault is not None and fault.kind == "timeout":
                end = time.monotonic() + fault.delay_s
                while time.monotonic() < end:
                    if await request.is_disconnected():
                        return JSONResponse({"error": {"message": "client gone"}}, status_code=499)
                    await asyncio.sleep(0.05)
            if fault is not None and fault.kind == "429":
                return JSONResponse({"error": {"message": "rate limited (stand-in)", "type": "rate_limit_error"}},
                                    status_code=429, headers={"Retry-After": f"{fault.retry_after_s:g}"})
            if fault is not None and fault.kind in ("503", "500"):
                return JSONResponse({"error": {"message": "unavailable (stand-in)", "type": "server_error"}},
                                    status_code=int(fault.kind))
            if fault is not None and fault.kind == "garbage":
                content, args = "Sure!! <<this is not JSON>> verdict: maybe", None
            elif schema is None and images:
                content, args = await asyncio.to_thread(self.captioner, images), None
            else:
                value = self._answer(name, schema, text)
                content, args = (None, json.dumps(value)) if mode == "tools" else (
                    value if isinstance(value, str) else json.dumps(value), None)
            usage = {"prompt_tokens": max(1, len(text) // 4),
                     "completion_tokens": max(1, len(content or args or "") // 4)}
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            if body.get("stream"):
                streaming = True
                return self._stream(body, name, content, args, usage, number)
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if args is not None:
                message["tool_calls"] = [{"id": f"call_{number}", "type": "function",
                                          "function": {"name": name, "arguments": args}}]
            return JSONResponse({"id": f"chatcmpl-{number}", "object": "chat.completion", "created": int(time.time()),
                                 "model": body.get("model", self.model),
                                 "choices": [{"index": 0, "message": message,
                                              "finish_reason": "tool_calls" if args is not None else "stop"}],
                                 "usage": usage})
        finally:
            if not streaming:
                self._done()

    def _done(self) -> None:
        with self._lock:
            self.current -= 1

    def _stream(self, body: dict, name: str | None, content: str | None, args: str | None, usage: dict, number: int):
        from starlette.responses import StreamingResponse

        base = {"id": f"chatcmpl-{number}", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": body.get("model", self.model)}
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        async def events():
            try:
                if args is not None:
                    delta = {"role": "assistant", "content": None, "tool_calls": [{
                        "index": 0, "id": f"call_{number}", "type": "function",
                        "function": {"name": name, "arguments": args}}]}
                else:
                    delta = {"role": "assistant", "content": content or ""}
                yield _sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
                yield _sse({**base, "choices": [{"index": 0, "delta": {},
                                                 "finish_reason": "tool_calls" if args is not None else "stop"}]})
                if include_usage:
                    yield _sse({**base, "choices": [], "usage": usage})
                yield "data: [DONE]\n\n"
            finally:
                self._done()

        return StreamingResponse(events(), media_type="text/event-stream")

    def _answer(self, name: str | None, schema: dict | None, text: str) -> Any:
        found = self.answers.get(name) if name else None
        if found is None:
            found = next((v for k, v in self.answers.items() if k not in DEFAULT_ANSWERS and k in text), None)
        if found is None and name:
            found = next((v for k, v in DEFAULT_ANSWERS.items() if name.startswith(k)), None)
        if callable(found):
            return found(text, schema or {})
        if found is not None:
            return found
        if schema is None:
            return "OK (stand-in answer)"
        return fake_value(schema, text, self.choices)

    # -- running --

    def _make_server(self):
        import uvicorn

        config = uvicorn.Config(self.app(), log_level="warning", access_log=False, lifespan="off",
                                backlog=4096, timeout_keep_alive=30)
        self._server = uvicorn.Server(config)
        return self._server

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted (the command line)."""
        self._make_server().run(sockets=[self._sock])

    def __enter__(self) -> StandIn:
        server = self._make_server()
        server.install_signal_handlers = lambda: None  # not the main thread's to take
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [self._sock]}, name="standin",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the stand-in server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._sock.close()


def _sse(data: dict) -> str:
    return f"data: {json.dumps(data)}\n\n"


def _requested(body: dict) -> tuple[str | None, dict | None, str]:
    """(schema name, JSON schema, mode) a chat request asks for: tools, json_schema, json_object or text."""
    tools = body.get("tools") or []
    if tools:
        fn = tools[0].get("function", {})
        choice = body.get("tool_choice")
        if isinstance(choice, dict) and choice.get("function", {}).get("name"):
            fn = next((t["function"] for t in tools if t["function"]["name"] == choice["function"]["name"]), fn)
        return fn.get("name"), fn.get("parameters") or {}, "tools"
    rf = body.get("response_format") or {}
    if rf.get("type") == "json_schema":
        js = rf.get("json_schema") or {}
        return js.get("name") or (js.get("schema") or {}).get("title"), js.get("schema") or {}, "json_schema"
    if rf.get("type") == "json_object" and rf.get("schema"):
        return rf["schema"].get("title"), rf["schema"], "json_object"
    return None, None, "text"


def parse_fault(spec: str) -> Fault:
    """A fault from the command line: KIND, KIND@N[,N...] (request numbers), KIND%N (every n-th request),
    KIND~TEXT (requests whose prompt holds TEXT); ``*K`` at the end: at most K times. KIND is one of
    timeout, 429, 503, 500, garbage."""
    m = re.fullmatch(r"(\w+)(?:@([\d,]+)|%(\d+)|~(.+?))?(?:\*(\d+))?", spec)
    if not m:
        raise ValueError(f"cannot read fault {spec!r} (KIND, KIND@3,7, KIND%10 or KIND~TEXT, then *TIMES)")
    kind, at, every, match, times = m.groups()
    return Fault(kind, match=match, requests=tuple(int(n) for n in at.split(",")) if at else (),
                 every=int(every) if every else None, times=int(times) if times else None)


def parse_choices(specs: list[str]) -> dict[str, Any]:
    """``NAME=VALUE`` pairs from the command line as ``StandIn(choices=...)``: VALUE is read as JSON when it
    parses (``score=3``, ``flag=true``), else kept as text (``verdict=reject``). Raises ValueError for a pair
    without ``=`` or with an empty name."""
    out: dict[str, Any] = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"cannot read choice {spec!r} (NAME=VALUE, e.g. verdict=reject)")
        try:
            out[name.strip()] = json.loads(value)
        except ValueError:
            out[name.strip()] = value
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m agents.standin``: serve the stand-in on ``--host``/``--port`` until interrupted; returns the exit
    code."""
    ap = argparse.ArgumentParser(prog="python -m agents.standin", description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8099, help="port on 127.0.0.1 (0: a free one)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--latency", type=float, default=0.0, help="seconds each request waits before its answer")
    ap.add_argument("--model", default="standin", help="the model name /v1/models lists")
    ap.add_argument("--fault", action="append", default=[], metavar="SPEC",
                    help="inject a fault: timeout, 429, 503, 500 or garbage, then @N,M (request numbers), %%N "
                         "(every n-th), ~TEXT (prompt holds TEXT), *K (at most K times); repeatable")
    ap.add_argument("--timeout-delay", type=float, default=30.0, help="seconds a timeout fault holds a request")
    ap.add_argument("--retry-after", type=float, default=1.0, help="the Retry-After of a 429 fault, in seconds")
    ap.add_argument("--choice", action="append", default=[], metavar="NAME=VALUE",
                    help="answer VALUE for every property NAME (an enum's choice, e.g. verdict=reject; VALUE read "
                         "as JSON when it parses, else as text); repeatable")
    args = ap.parse_args(argv)
    try:
        faults = [parse_fault(s) for s in args.fault]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for f in faults:
        f.delay_s, f.retry_after_s = args.timeout_delay, args.retry_after
    try:
        choices = parse_choices(args.choice)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        srv = StandIn(latency_s=args.latency, faults=faults, choices=choices, model=args.model, host=args.host,
                      port=args.port)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 2
    print(f"stand-in model at {srv.base_url} (latency {args.latency:g} s)", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    print(json.dumps(srv.stats()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
