"""The LLM gateway: the one place a model is called.

Every call renders a prompt file, looks up the response cache (key: model, role, rendered
messages, parameters, output schema, structured mode), calls the role's model through
langchain (ChatOpenAI for any OpenAI-compatible server), validates the answer against a
pydantic model with re-asks that feed the validation error back, and writes one
``llm_calls`` row: node, role, prompt name and sha256, model, messages, response, tokens,
cost, latency, attempts, error. API keys are read from the environment at call time and
never reach the store.

- **Structured answers** (``agent.llm.structured``): a forced tool call, OpenAI-style
  ``response_format`` with a strict JSON schema (OpenAI, vLLM guided decoding, llama.cpp's
  llama-server), or llama-cpp-python's ``json_object`` + schema (a grammar: the embedded
  server). Small integer ranges become enums so grammars bound them too.
- **Hard timeouts**: each request runs on a worker thread; at ``timeout_s`` seconds it is cut (a
  streamed answer closes its connection, which stops the server's generation), never a hang.
- **Re-sends**: a timeout, 429, 5xx or connection error is re-sent ``http_retries`` times with
  exponential backoff and jitter (tenacity), honouring the server's Retry-After / retry-after-ms.
  Worst case for one request: ``(http_retries + 1) * timeout_s`` plus the waits.
- **Failures are items**: once the re-sends are spent, ``LLMOutputInvalid`` or a subclass (kinds
  invalid_output, timeout, rate_limited, server_error, bad_request) says this item failed, go on;
  ``LLMUnavailable`` (connection, refused, down) says the endpoint is down: stop, resume later. A
  failed call is recorded in ``llm_calls`` with ``error`` and ``error_kind`` and never cached, so a
  rerun asks again. ``Gateway.preflight()`` fails fast when an endpoint is down from the start.
- **Concurrency**: ``call`` is thread-safe; at most ``concurrency`` requests are in flight per
  endpoint (``Gateway.in_flight()`` reads current and peak); a cache hit takes no slot.
- **Nothing paid twice**: an answer goes into the response cache the moment it validates,
  inside ``agents.interrupts.protected()``; an interrupt that arrives while a request is in
  flight waits ``grace_s`` for its answer and saves it before the process stops. Two threads
  asking the same call at once pay once. A cache hit is logged as a ``cached`` row once per run
  (a rerun of the same run logs nothing new).
- **The store does not hold a call up**: the answer and its ``llm_calls`` row are one queued
  write (``Store.record_llm_call``): the call returns once it is queued, the store serves the
  answer from memory until it lands, and closing the store (a Ctrl-C reaches the command's
  ``finally``) lands it. The cache lookup answers a key never written without a query
  (store/db.py ``_CacheKeys``).
"""

from __future__ import annotations

import copy
import email.utils
import functools
import hashlib
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import tenacity
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, ValidationError

import prompts
from agents.config import ROLES, LLMConfig
from agents.direct_chat import Clients, DirectChat, EndpointStatusError, request_base
from agents.interrupts import is_interrupt, protected
from tools.errors import RunStopped

log = logging.getLogger(__name__)


FAILED_KINDS = ("invalid_output", "timeout", "rate_limited", "server_error", "bad_request")
"""Kinds of a failed call that mean "this item failed, go on" (``LLMOutputInvalid`` and subclasses)."""
DOWN_KINDS = ("connection", "refused", "down", "error")
"""Kinds of ``LLMUnavailable``: the endpoint is down or refuses everything; stop the build (resumable)."""
RETRIED_KINDS = ("timeout", "rate_limited", "server_error", "connection")
"""Kinds of a request that is re-sent with backoff (``LLMConfig.http_retries`` times)."""


class LLMError(Exception):
    """Base of the gateway's errors. ``kind``: what went wrong (FAILED_KINDS or DOWN_KINDS); ``call_id``:
    the ``llm_calls`` row that records the failed call ("" when none was written)."""

    kind = "error"

    def __init__(self, message: str, call_id: str = "", kind: str | None = None):
        super().__init__(message)
        self.call_id = call_id
        if kind is not None:
            self.kind = kind


class LLMUnavailable(LLMError, RunStopped):
    """The endpoint is down or refuses every request: stop the build (one line for the user; the run resumes).

    Kinds: ``connection`` (could not connect, after the re-sends), ``refused`` (HTTP 401, 403 or 404: a
    wrong key, model or URL), ``down`` (``LLMConfig.down_after`` calls in a row failed on the endpoint,
    or ``Gateway.preflight`` found it unreachable), ``error`` (an unexpected client error)."""

    kind = "error"


class LLMOutputInvalid(LLMError):
    """This call gave no usable answer: the item (video, clip) fails, the build goes on.

    The base of every per-item failure (the name is kept for compatibility; ``LLMCallFailed`` is the same
    class). ``kind``: ``invalid_output`` (no answer validated after the re-asks, e.g. garbage), or, after
    the re-sends are exhausted, ``timeout``, ``rate_limited`` (429), ``server_error`` (5xx) or
    ``bad_request`` (400/413/422, e.g. the prompt is too long for the model). The call is recorded in
    ``llm_calls`` (``error``, ``error_kind``) and never cached: a rerun asks again."""

    kind = "invalid_output"


LLMCallFailed = LLMOutputInvalid


class LLMTimeout(LLMOutputInvalid):
    """Every try of a request ran past ``timeout_s`` and was cut (not cached: the next run asks again)."""

    kind = "timeout"


class LLMRequestFailed(LLMOutputInvalid):
    """The endpoint kept answering 429 (``rate_limited``) or 5xx (``server_error``) through the re-sends, or
    refused this one request (``bad_request``)."""


class _Resend(Exception):
    """One try failed in a way worth re-sending (internal to the gateway's retry loop)."""

    def __init__(self, kind: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after


class BudgetExceeded(RunStopped):
    """A run budget is spent; ``name`` says which (tokens, usd, search_units, videos, wall_time)."""

    def __init__(self, name: str, detail: str):
        super().__init__(f"budget {name} spent: {detail}")
        self.name = name


@dataclass(frozen=True)
class ImageInput:
    """An image sent with a call (a keyframe): ``data`` the encoded bytes, ``name`` what the logged call shows
    (a file name, never a build-machine path), ``mime`` its type. The request carries it as a base64 data URL;
    the ``llm_calls`` row and the cache key carry only its type, size and sha256 (``logged_part``)."""

    data: bytes
    name: str
    mime: str = "image/jpeg"

    @functools.cached_property
    def sha256(self) -> str:
        """sha256 of the bytes (hex)."""
        return hashlib.sha256(self.data).hexdigest()

    def part(self) -> dict:
        """The OpenAI chat content part that sends the image: ``image_url`` with a data URL."""
        import base64

        return {"type": "image_url",
                "image_url": {"url": f"data:{self.mime};base64,{base64.b64encode(self.data).decode()}"}}

    def logged_part(self) -> dict:
        """The same part as logged: the image elided to its type, size, sha256 and name."""
        return {"type": "image_url", "image_url": {
            "url": f"({self.mime}, {len(self.data)} bytes, sha256 {self.sha256[:16]}: {self.name})"}}


def with_images(messages: list[dict], images: list[ImageInput], logged: bool) -> list[dict]:
    """``messages`` with the images appended to the last user message as content parts (its text first):
    ``logged`` True elides each image (``ImageInput.logged_part``), else sends it (``ImageInput.part``)."""
    if not images:
        return messages
    out = [dict(m) for m in messages]
    last = max(i for i, m in enumerate(out) if m["role"] == "user")
    out[last]["content"] = [{"type": "text", "text": out[last]["content"]},
                            *(im.logged_part() if logged else im.part() for im in images)]
    return out


def message_text(content: Any) -> str:
    """A message's text: the content itself, or its text parts joined (image parts left out)."""
    if isinstance(content, str):
        return content
    return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")


@dataclass
class Answer:
    """What ``Gateway.call`` returns: ``value`` the validated pydantic object (or the text, without a
    schema), ``call_id`` the ``llm_calls`` row that logs it, ``cached`` True when served from the cache."""

    value: Any                    # the validated pydantic object, or the text
    call_id: str
    cached: bool


def make_chat_model(cfg: LLMConfig, role: str) -> BaseChatModel:
    """ChatOpenAI for the role's endpoint; the key comes from the environment, never from the store."""
    from langchain_openai import ChatOpenAI

    over = cfg.roles.get(role)

    def pick(name: str) -> Any:
        """The role's override of setting ``name``, else the endpoint-wide value."""
        return getattr(over, name) if over and getattr(over, name) is not None else getattr(cfg, name)

    key = os.environ.get(pick("api_key_env")) or "not-needed"
    # langchain-openai sends max_completion_tokens; llama.cpp's server reads only max_tokens
    extra = {"max_tokens": pick("max_tokens")} if cfg.legacy_max_tokens else None
    # no client re-sends (max_retries 0): the gateway re-sends itself, so each try is cut at timeout_s,
    # holds an endpoint slot only while in flight, and counts in llm_calls.attempts
    return ChatOpenAI(base_url=pick("base_url"), model=pick("model"), api_key=key, temperature=pick("temperature"),
                      max_tokens=pick("max_tokens"), timeout=cfg.timeout_s, max_retries=0,
                      extra_body=extra, stream_usage=True)


def role_model_name(cfg: LLMConfig, role: str) -> str:
    """The model name the role's requests carry (its override, else ``cfg.model``)."""
    over = cfg.roles.get(role)
    return (over.model if over and over.model else None) or cfg.model


def structured_mode(cfg: LLMConfig) -> str:
    """The structured-output mode in force: ``auto`` means tools (the embedded server sets llamacpp)."""
    return "tools" if cfg.structured == "auto" else cfg.structured


# -- JSON schemas for decoders ------------------------------------------------------------

def _walk(node: Any, fn: Callable[[dict], None]) -> None:
    if isinstance(node, dict):
        fn(node)
        for v in node.values():
            _walk(v, fn)
    elif isinstance(node, list):
        for v in node:
            _walk(v, fn)


@functools.lru_cache(maxsize=256)
def _json_schema(schema: type[BaseModel]) -> dict:
    """The model's JSON schema, made once per class (pydantic takes ~1 ms each time); never mutate it."""
    return schema.model_json_schema()


def grammar_schema(schema: type[BaseModel]) -> dict:
    """The model's JSON schema for a grammar-based decoder: small integer ranges as enums (llama.cpp's
    schema-to-grammar ignores minimum/maximum), descriptions and titles kept."""
    out = copy.deepcopy(_json_schema(schema))

    def fix(node: dict) -> None:
        """A bounded small integer range as an enum."""
        if node.get("type") == "integer" and "minimum" in node and "maximum" in node \
                and node["maximum"] - node["minimum"] <= 20:
            node["enum"] = list(range(int(node["minimum"]), int(node["maximum"]) + 1))

    _walk(out, fix)
    return out


def strict_schema(schema: type[BaseModel]) -> dict:
    """The model's JSON schema in OpenAI's strict form: every object closed (additionalProperties
    false) with every property required; defaults dropped (the model writes every field)."""
    out = copy.deepcopy(_json_schema(schema))

    def fix(node: dict) -> None:
        """An object closed, every property required, no default."""
        if node.get("type") == "object" and "properties" in node:
            node["additionalProperties"] = False
            node["required"] = list(node["properties"])
        node.pop("default", None)

    _walk(out, fix)
    return out


def _type_text(node: dict, defs: dict, depth: int) -> str:
    if "$ref" in node:
        return _type_text(defs[node["$ref"].split("/")[-1]], defs, depth)
    if "enum" in node:
        return " or ".join(json.dumps(v) for v in node["enum"])
    kind = node.get("type")
    if kind == "integer":
        lo, hi = node.get("minimum"), node.get("maximum")
        return f"integer {lo} to {hi}" if lo is not None and hi is not None else "integer"
    if kind == "array":
        lo, hi = node.get("minItems"), node.get("maxItems")
        count = (f"exactly {lo}" if lo == hi and lo is not None else f"{lo or 0} to {hi}" if hi else "")
        return f"list of {count + ' ' if count else ''}{_type_text(node.get('items', {}), defs, depth)}".strip()
    if kind == "object":
        inner = "; ".join(f'"{k}": {_type_text(v, defs, depth + 1)}' for k, v in node.get("properties", {}).items())
        return "{" + inner + "}"
    if kind == "string":
        return "string"
    return kind or "value"


@functools.lru_cache(maxsize=256)
def schema_hint(schema: type[BaseModel]) -> str:
    """A short plain-text description of the answer's JSON object, appended to the system message when the
    schema is enforced by response_format (the model does not see a tool definition then)."""
    js = _json_schema(schema)
    defs = js.get("$defs", {})
    lines = ["Answer with one JSON object with these keys, in this order:"]
    for key, node in js.get("properties", {}).items():
        desc = node.get("description")
        lines.append(f'- "{key}": {_type_text(node, defs, 0)}' + (f" ({desc})" if desc else ""))
    return "\n".join(lines)


# -- replies ------------------------------------------------------------------------------

_LENIENT = json.JSONDecoder(strict=False)  # raw newlines inside strings: grammars let small models write them


def _json_from_text(text: str) -> Any:
    """The first JSON object in a reply (models without tool calls often wrap it in prose or fences)."""
    text = text.strip()
    try:
        return _LENIENT.decode(text)
    except ValueError:
        pass
    start = text.find("{")
    while start != -1:
        depth = 0
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                try:
                    return _LENIENT.decode(text[start:i + 1])
                except ValueError:
                    break
        start = text.find("{", start + 1)
    raise ValueError("the answer holds no JSON object")


def _read_answer(msg: AIMessage, schema: type[BaseModel] | None) -> tuple[Any, Any, str | None, str]:
    """(raw, value, error, what to re-ask) of one answer. Without a schema the answer is its text, valid
    unless empty; with one, the tool call's arguments or the first JSON object of the text, valid when
    ``schema`` validates it (``value`` the pydantic object, None when invalid)."""
    if schema is None:
        raw = str(msg.content)
        return raw, raw, None if raw.strip() else "the answer is empty", "That answer is empty. Answer again."
    raw = msg.tool_calls[0]["args"] if msg.tool_calls else str(msg.content)
    try:
        return raw, schema.model_validate(raw if isinstance(raw, dict) else _json_from_text(raw)), None, ""
    except (ValueError, ValidationError) as exc:
        error = _validation_line(exc)
        return raw, None, error, f"That answer is invalid: {error}. Answer again with valid arguments for " \
                                 f"{schema.__name__}."


def _estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _to_lc(messages: list[dict]) -> list:
    kinds = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
    return [kinds[m["role"]](content=m["content"]) for m in messages]


@dataclass(frozen=True)
class InFlight:
    """Requests at one endpoint: ``current`` in flight now, ``peak`` most at once since the gateway
    started, ``limit`` the slots, ``sent`` requests sent in all (each re-send and re-ask counts)."""

    endpoint: str
    limit: int
    current: int
    peak: int
    sent: int


class EndpointSlots:
    """At most ``limit`` requests in flight at one endpoint (a bounded semaphore), with exact counts.

    A slot is taken just before a request is sent and given back when its HTTP exchange ends (a request
    cut at its timeout keeps its slot until the client gives up on it), so ``current`` is what the
    server sees. Thread-safe."""

    def __init__(self, endpoint: str, limit: int):
        self.endpoint = endpoint
        self.limit = limit
        self._sem = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self._current = self._peak = self._sent = 0

    def acquire(self) -> None:
        """Take a slot (waits while ``limit`` requests are in flight) and count the request sent."""
        self._sem.acquire()
        with self._lock:
            self._current += 1
            self._sent += 1
            self._peak = max(self._peak, self._current)

    def release(self) -> None:
        """Give the slot back (the request's HTTP exchange ended)."""
        with self._lock:
            self._current -= 1
        self._sem.release()

    def snapshot(self) -> InFlight:
        """The counts now (``InFlight``)."""
        with self._lock:
            return InFlight(self.endpoint, self.limit, self._current, self._peak, self._sent)


@dataclass
class GatewayStats:
    """Exact counts of one Gateway's calls (all threads): ``calls`` answered or failed, of which ``cached``
    served from the response cache and ``failed`` raised; ``requests`` sent (re-sends and re-asks
    included); ``resends`` after a timeout, 429, 5xx or connection error; tokens paid (input, output)."""

    calls: int = 0
    cached: int = 0
    failed: int = 0
    requests: int = 0
    resends: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


EMBEDDED = "embedded"  # the endpoint name of a role with no base_url (the embedded llama.cpp server)


class Gateway:
    """Calls models by role for one run; see the module docstring. Thread-safe: ``call`` runs from
    many worker threads at once.

    - Concurrency: at most ``LLMConfig.concurrency`` requests in flight per endpoint (a role's
      ``concurrency`` override limits its endpoint; roles sharing one share its slots, the smallest
      limit wins). ``in_flight()`` reads current and peak counts; a cache hit takes no slot, and two
      threads asking the same cache key at once pay once (the second waits and reads the cache).
    - Faults: a request is cut at ``timeout_s`` seconds; timeouts, 429, 5xx and connection errors are
      re-sent ``http_retries`` times with exponential backoff and jitter (tenacity) that honours the
      server's Retry-After / retry-after-ms up to ``retry_after_max_s``. Then ``LLMOutputInvalid``
      (and subclasses) means this item failed, go on; ``LLMUnavailable`` means the endpoint is down.
      A failed call is recorded in ``llm_calls`` with ``error_kind`` and never cached.
    - ``preflight()`` checks once that each configured endpoint answers.

    ``on_progress(role, tokens)`` is called from the request's worker thread as streamed tokens
    arrive (for the live display); it must not touch the store."""

    def __init__(self, store, run_id: str, cfg: LLMConfig, models: dict[str, BaseChatModel] | None = None,
                 budget=None, on_progress: Callable[[str, int], None] | None = None, grace_s: float = 3.0):
        self.store = store
        self.run_id = run_id
        self.cfg = cfg
        self._models = dict(models or {})
        self._given = set(self._models)  # models handed in (tests): compared by identity in same_model
        self.budget = budget
        self.on_progress = on_progress
        self.grace_s = grace_s
        self._lock = threading.Lock()  # guards _models, _slots, _keys, _failing and _stats
        self._slots: dict[str, EndpointSlots] = {}
        self._role_slots: dict[str, EndpointSlots] = {}  # role -> its endpoint's slots
        self._bound: dict[tuple, Any] = {}  # (role, schema, mode) -> the model bound to answer it
        self._clients = Clients()  # per endpoint: the pooled HTTP client of DirectChat
        self._keys: dict[str, list] = {}  # cache key -> [lock, users]: one request per key at a time
        self._failing: dict[str, int] = {}  # endpoint -> calls in a row that failed on transport
        self._stats = GatewayStats()
        self._backoff = tenacity.wait_exponential_jitter(multiplier=cfg.backoff_s, max=cfg.backoff_max_s,
                                                        jitter=cfg.backoff_s)

    # -- endpoints ------------------------------------------------------------------------

    def _pick(self, role: str, name: str) -> Any:
        over = self.cfg.roles.get(role)
        value = getattr(over, name, None) if over is not None else None
        return value if value is not None else getattr(self.cfg, name)

    def endpoint(self, role: str) -> str:
        """The endpoint a role's requests go to: its base_url, or ``"embedded"``."""
        return self._pick(role, "base_url") or EMBEDDED

    def endpoint_limit(self, endpoint: str) -> int:
        """Requests allowed in flight at ``endpoint``: the smallest concurrency of the roles sending there."""
        limits = [self._pick(r, "concurrency") for r in ROLES if self.endpoint(r) == endpoint]
        return min(limits) if limits else self.cfg.concurrency

    def slots(self, role: str) -> EndpointSlots:
        """The role's endpoint slots (created on first use; shared by every role sending there)."""
        found = self._role_slots.get(role)  # a dict read is atomic: no lock once made (every call asks)
        if found is not None:
            return found
        name = self.endpoint(role)
        with self._lock:
            if name not in self._slots:
                self._slots[name] = EndpointSlots(name, self.endpoint_limit(name))
            found = self._role_slots[role] = self._slots[name]
            return found

    def in_flight(self) -> dict[str, InFlight]:
        """Per endpoint used so far: requests in flight now, the peak, the limit and requests sent."""
        with self._lock:
            slots = list(self._slots.values())
        return {s.endpoint: s.snapshot() for s in slots}

    def stats(self) -> GatewayStats:
        """A copy of the exact call counts so far (see GatewayStats)."""
        with self._lock:
            return GatewayStats(**vars(self._stats))

    def _count(self, **add: int) -> None:
        with self._lock:
            for k, v in add.items():
                setattr(self._stats, k, getattr(self._stats, k) + v)

    def close(self) -> None:
        """Close the pooled HTTP clients of the endpoints (their open connections); a later call opens
        new ones."""
        self._clients.close()
        with self._lock:
            self._bound.clear()

    def preflight(self) -> None:
        """Check once that every configured endpoint answers ``GET {base_url}/models`` within
        ``preflight_timeout_s`` seconds, before anything is spent; a build calls it at start so an
        endpoint that is down fails fast. Roles with a model handed in, and the embedded server (no
        base_url), are skipped. Raises LLMUnavailable (kind ``down``, one line, no key in it)."""
        from agents.local_llm import reachable

        seen: set[str] = set()
        for role in ROLES:
            url = self._pick(role, "base_url")
            if role in self._given or not url or url in seen:
                continue
            seen.add(url)
            why = reachable(url, timeout_s=self.cfg.preflight_timeout_s,
                            api_key=os.environ.get(self._pick(role, "api_key_env")))
            if why is not None:
                raise LLMUnavailable(_redact(why), kind="down")

    # -- models ---------------------------------------------------------------------------

    def model(self, role: str) -> BaseChatModel:
        """The role's chat model: the one handed in, else a ChatOpenAI made once (``make_chat_model``).
        Raises ValueError for a role not in ``agents.config.ROLES``."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        with self._lock:
            if role not in self._models:
                self._models[role] = make_chat_model(self.cfg, role)
            return self._models[role]

    def _params(self, role: str) -> dict:
        return {"temperature": self._pick(role, "temperature"), "max_tokens": self._pick(role, "max_tokens")}

    def _bind(self, role: str, schema: type[BaseModel] | None, mode: str):
        """The role's model bound to answer ``schema`` in ``mode``, made once per (role, schema, mode)."""
        key = (role, schema, mode)
        bound = self._bound.get(key)  # a dict read is atomic: no lock on the way of every call
        if bound is None:
            bound = self._make_bound(role, schema, mode)
            with self._lock:
                bound = self._bound.setdefault(key, bound)
        return bound

    def _make_bound(self, role: str, schema: type[BaseModel] | None, mode: str):
        """A langchain runnable, or (a model the gateway made, answers not streamed) a DirectChat that
        sends the same body over the endpoint's pooled client (agents/direct_chat.py)."""
        bound = self._lc_bound(role, schema, mode)
        url = self._pick(role, "base_url")
        if role in self._given or self.cfg.stream or not url:
            return bound
        endpoint = self.endpoint(role)
        client = self._clients.get(endpoint, self.endpoint_limit(endpoint), float(self.cfg.timeout_s))
        key = os.environ.get(self._pick(role, "api_key_env")) or "not-needed"
        return DirectChat(client, url, key, request_base(self.model(role), getattr(bound, "kwargs", None) or {}))

    def _lc_bound(self, role: str, schema: type[BaseModel] | None, mode: str):
        model = self.model(role)
        if schema is None or mode == "text":
            return model
        if mode == "tools":
            try:
                return model.bind_tools([schema], tool_choice=schema.__name__)
            except NotImplementedError:
                return model
        if mode == "json_schema":
            return model.bind(response_format={"type": "json_schema", "json_schema": {
                "name": schema.__name__, "schema": strict_schema(schema), "strict": True}})
        return model.bind(response_format={"type": "json_object", "schema": grammar_schema(schema)})

    # -- calls ----------------------------------------------------------------------------

    def call(self, role: str, node: str, prompt_name: str, values: dict[str, Any],
             schema: type[BaseModel] | None = None, video_id: str | None = None,
             images: list[ImageInput] | None = None) -> Answer:
        """Ask ``role``'s model; return a validated Answer (from the cache when the same call was paid
        before). Safe to call from many threads at once. ``images`` go with the user message as content
        parts (a vision model's request); the logged messages and the cache key hold each image's sha256,
        never its bytes.

        Raises ``LLMOutputInvalid`` or a subclass (this item failed, go on: kinds invalid_output, timeout,
        rate_limited, server_error, bad_request), ``LLMUnavailable`` (the endpoint is down: stop),
        ``BudgetExceeded``; an interrupt (KeyboardInterrupt, SIGTERM) passes through once an answer on
        its way is saved."""
        prompt = prompts.load(prompt_name)
        mode = structured_mode(self.cfg)
        messages = prompt.render(values)
        if schema is not None and mode != "tools":
            # in the system message: the same for every call of a task, so the server reuses its KV cache
            messages[0]["content"] += "\n\n" + schema_hint(schema)
        model_name = role_model_name(self.cfg, role)
        params = self._params(role)
        logged = with_images(messages, images or [], logged=True)
        key = hashlib.sha256(json.dumps({
            "model": model_name, "role": role, "messages": logged, "params": params, "structured": mode,
            "schema": _json_schema(schema) if schema else None}, sort_keys=True).encode()).hexdigest()
        row = {"call_id": uuid.uuid4().hex, "run_id": self.run_id, "node": node, "role": role,
               "video_id": video_id, "prompt_name": prompt.name, "prompt_sha256": prompt.sha256,
               "model": model_name, "cache_key": key, "messages": logged}

        # one thread per cache key at a time: a second thread asking the same call waits for the first
        # one's answer and reads it from the cache (paid once); a hit takes no endpoint slot
        with self._one_request(key):
            hit = self._cache_get(key)
            if hit is None:
                sent = with_images(messages, images or [], logged=False)
                return self._ask(role, row, sent, schema, mode, params, prompt_name)
        return self._replay(hit, row, schema)

    def _cache_get(self, key: str) -> dict | None:
        hit = self.store.llm_cache_get(key)
        if hit is not None and isinstance(hit["response"], dict) and "__invalid__" in hit["response"]:
            return None  # a failure cached by an older version: failures are asked again
        return hit

    @contextmanager
    def _one_request(self, key: str) -> Iterator[None]:
        """Hold the cache key while looking it up and asking: one thread per key at a time."""
        with self._lock:
            entry = self._keys.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._lock:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._keys[key]

    def _ask(self, role: str, row: dict, messages: list[dict], schema, mode: str, params: dict,
             prompt_name: str) -> Answer:
        if self.budget is not None:
            self.budget.check_llm()
        call_id = row["call_id"]
        t0 = time.perf_counter()
        tokens_in = tokens_out = 0
        estimated = False
        error = None
        value: Any = None
        raw: Any = None
        convo = _to_lc(messages)
        attempts = 0
        pending: BaseException | None = None  # an interrupt that arrived while the answer was on its way
        stream = bool(self.cfg.stream)
        recorded = False
        try:
            bound = self._bind(role, schema, mode)
            for _ in range(self.cfg.retries + 1):
                msg, chunks, pending, sent = self._send(role, bound, convo, stream)
                attempts += sent
                usage = getattr(msg, "usage_metadata", None) or {}
                if usage.get("input_tokens") is not None:
                    tokens_in += int(usage.get("input_tokens") or 0)
                    tokens_out += int(usage.get("output_tokens") or 0)
                else:
                    estimated = True
                    tokens_in += _estimate_tokens("".join(message_text(m["content"]) for m in messages))
                    tokens_out += chunks or _estimate_tokens(str(msg.content) + json.dumps(msg.tool_calls or []))
                raw, value, error, again = _read_answer(msg, schema)
                if error is None or pending is not None:
                    break  # valid, or interrupted: no re-ask
                convo = [*convo, AIMessage(content=raw if isinstance(raw, str) else json.dumps(raw)),
                         HumanMessage(content=again)]
            # a text answer (no schema) is kept as {"text": ...}: the store's response columns hold JSON
            response = value.model_dump(mode="json") if isinstance(value, BaseModel) else \
                {"text": raw} if schema is None else raw
            with protected():  # the answer reaches the cache before any interrupt can act
                # one commit: the answer in the cache and its llm_calls row; a failure is never cached
                self._record(row, response, tokens_in, tokens_out, estimated, t0, attempts, error,
                             None if error is None else "invalid_output", cache=error is None)
                recorded = True
        except _Resend as exc:  # the re-sends are spent
            attempts += getattr(exc, "sent", 0)
            failure = self._give_up(role, exc, call_id)
            self._record(row, raw, tokens_in, tokens_out, estimated, t0, attempts, str(failure), failure.kind)
            self._count(calls=1, failed=1, input_tokens=tokens_in, output_tokens=tokens_out)
            raise failure from exc
        except LLMError as exc:  # refused outright (4xx) or an unexpected client error
            attempts += getattr(exc, "sent", 0)
            exc.call_id = call_id
            if not recorded:
                self._record(row, raw, tokens_in, tokens_out, estimated, t0, attempts, str(exc), exc.kind)
            self._count(calls=1, failed=1, input_tokens=tokens_in, output_tokens=tokens_out)
            raise
        except BaseException:
            if not recorded and attempts:
                self._record(row, raw, tokens_in, tokens_out, estimated, t0, attempts, "interrupted",
                             "interrupted")
            raise
        self._count(calls=1, failed=int(error is not None), input_tokens=tokens_in, output_tokens=tokens_out)
        with self._lock:
            self._failing[self.endpoint(role)] = 0
        if pending is not None:
            raise pending
        if error is not None:
            raise LLMOutputInvalid(f"{prompt_name}: no valid answer after {attempts} tries ({error})", call_id)
        return Answer(value, call_id, False)

    def _give_up(self, role: str, exc: _Resend, call_id: str) -> LLMError:
        """The error a call raises once its re-sends are spent: connection errors and a run of
        ``down_after`` transport failures in a row mean the endpoint is down."""
        endpoint = self.endpoint(role)
        tries = self.cfg.http_retries + 1
        with self._lock:
            failing = self._failing[endpoint] = self._failing.get(endpoint, 0) + 1
        where = f"{exc} ({tries} tr{'y' if tries == 1 else 'ies'})"
        if exc.kind == "connection":
            return LLMUnavailable(where, call_id, kind="connection")
        if failing >= self.cfg.down_after:
            return LLMUnavailable(f"{where}; {failing} calls in a row failed on this endpoint: it looks down",
                                  call_id, kind="down")
        if exc.kind == "timeout":
            return LLMTimeout(where, call_id)
        return LLMRequestFailed(where, call_id, kind=exc.kind)

    def _record(self, row: dict, response: Any, tokens_in: int, tokens_out: int, estimated: bool, t0: float,
                attempts: int, error: str | None, error_kind: str | None, cache: bool = False) -> None:
        """Log a paid call (``llm_calls``); ``cache``: its answer goes into the response cache in the same
        commit."""
        cost = (tokens_in * self.cfg.price_in_per_mtok + tokens_out * self.cfg.price_out_per_mtok) / 1e6
        with protected():
            self.store.record_llm_call({**row, "cached": False, "response": response, "input_tokens": tokens_in,
                                        "output_tokens": tokens_out, "tokens_estimated": estimated,
                                        "cost_usd": cost, "latency_s": time.perf_counter() - t0,
                                        "attempts": attempts, "error": error, "error_kind": error_kind},
                                       cache=cache)

    def _replay(self, hit: dict, row: dict, schema) -> Answer:
        """A cache hit: logged once per run (a rerun of the same run adds no row), costs nothing."""
        self._count(calls=1, cached=1)
        with protected():  # check and write as one step on the store's writer, so two threads log one row
            call_id = self.store.record_llm_call_once({
                **row, "cached": True, "response": hit["response"], "input_tokens": hit["input_tokens"],
                "output_tokens": hit["output_tokens"], "tokens_estimated": False, "cost_usd": 0.0,
                "latency_s": 0.0, "attempts": 0, "error": None, "error_kind": None})
        got = hit["response"]
        value = schema.model_validate(got) if schema else got["text"] if isinstance(got, dict) and "text" in got \
            else got
        return Answer(value, call_id, True)

    def same_model(self, role_a: str, role_b: str) -> bool:
        """True when two roles resolve to the same model, endpoint and parameters: at temperature 0 they
        would give the same answer to the same prompt."""
        def key(role: str) -> tuple:
            """What decides a role's answer: model, endpoint, parameters, a handed-in model's identity."""
            return role_model_name(self.cfg, role), self.endpoint(role), \
                tuple(sorted(self._params(role).items())), id(self._models[role]) if role in self._given else None

        return key(role_a) == key(role_b) and self._params(role_a)["temperature"] == 0

    def _timeout(self, role: str) -> float:
        return float(self.cfg.timeout_s)

    def _wait(self, state: tenacity.RetryCallState) -> float:
        """Seconds before the next try: the server's Retry-After when it gives one (up to
        ``retry_after_max_s``), else exponential backoff with jitter from ``backoff_s`` to ``backoff_max_s``."""
        exc = state.outcome.exception() if state.outcome else None
        after = getattr(exc, "retry_after", None)
        if after is not None and 0 <= after <= self.cfg.retry_after_max_s:
            return after
        return self._backoff(state)

    def _send(self, role: str, bound, convo: list, stream: bool) -> tuple[AIMessage, int | None,
                                                                        BaseException | None, int]:
        """One answer, re-sent after a timeout, 429, 5xx or connection error (tenacity; see ``_wait``).
        Returns (message, streamed chunks, pending interrupt, requests sent); raises ``_Resend`` (with
        ``sent``) when the re-sends are spent, LLMError when the endpoint refuses outright."""
        sent = 0

        def attempt():
            """One try (counted in the stats)."""
            nonlocal sent
            sent += 1
            self._count(requests=1, resends=int(sent > 1))
            if isinstance(bound, DirectChat) and threading.current_thread() is not threading.main_thread():
                return self._request_inline(role, bound, convo)
            return self._request(role, bound, convo, stream)

        retrying = tenacity.Retrying(stop=tenacity.stop_after_attempt(self.cfg.http_retries + 1),
                                     retry=tenacity.retry_if_exception_type(_Resend), wait=self._wait,
                                     before_sleep=self._log_resend(role), reraise=True)
        try:
            msg, chunks, pending = retrying(attempt)
        except (_Resend, LLMError) as exc:
            exc.sent = sent
            raise
        return msg, chunks, pending, sent

    def _log_resend(self, role: str) -> Callable[[tenacity.RetryCallState], None]:
        def log_it(state: tenacity.RetryCallState) -> None:
            """Log a failed try before its re-send."""
            exc = state.outcome.exception() if state.outcome else None
            log.info("LLM %s: try %d failed (%s: %s); re-sending in %.2f s", role, state.attempt_number,
                     getattr(exc, "kind", "?"), exc, state.upcoming_sleep)
        return log_it

    def _request(self, role: str, bound, convo: list, stream: bool) -> tuple[AIMessage, int | None,
                                                                           BaseException | None]:
        """One request on a worker thread, holding one of the endpoint's slots, cut at the role's timeout.
        Returns (message, streamed chunks, an interrupt that arrived while the answer was on its way, to
        raise once it is saved). Raises ``_Resend`` for a timeout, 429, 5xx or connection error,
        LLMRequestFailed (bad_request) or LLMUnavailable for a request the endpoint refuses."""
        box: dict[str, Any] = {}
        done, cancel = threading.Event(), threading.Event()
        progress = self.on_progress
        slots = self.slots(role)

        def work() -> None:
            """The request, on its own thread; its answer or error goes into ``box``."""
            try:
                if stream:
                    acc, n = None, 0
                    chunks = iter(bound.stream(convo))
                    try:
                        for chunk in chunks:
                            acc = chunk if acc is None else acc + chunk
                            n += 1
                            if progress is not None:
                                progress(role, n)
                            if cancel.is_set():
                                break
                    finally:
                        close = getattr(chunks, "close", None)
                        if close:
                            close()  # closes the HTTP stream: the server stops generating
                    if not cancel.is_set():
                        box["msg"], box["chunks"] = acc if acc is not None else AIMessage(content=""), n
                else:
                    box["msg"] = bound.invoke(convo)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                box["error"] = exc
            finally:
                slots.release()  # when the exchange really ends, so the count is what the server sees
                done.set()

        slots.acquire()
        thread = threading.Thread(target=work, name=f"llm-{role}", daemon=True)
        try:
            thread.start()
        except BaseException:
            slots.release()
            raise
        timeout = self._timeout(role)
        try:
            finished = done.wait(timeout)
        except BaseException as exc:
            if is_interrupt(exc):
                try:  # the answer may be on its way: keep it if it comes within the grace period
                    if done.wait(self.grace_s) and "msg" in box:
                        return box["msg"], box.get("chunks"), exc
                except BaseException:  # a second interrupt: go now
                    pass
            cancel.set()
            raise
        if not finished:
            cancel.set()
            raise _Resend("timeout", f"no answer within the {timeout:g} s timeout (cut)")
        if "error" in box:
            self._raise_failed(role, box["error"])
        return box["msg"], box.get("chunks"), None

    def _request_inline(self, role: str, bound: DirectChat, convo: list) -> tuple[AIMessage, None, None]:
        """One non-streamed DirectChat request on the calling thread (a worker thread, where no
        interrupt lands), holding one of the endpoint's slots; the client's timeouts (``timeout_s``
        to connect, and between bytes of the answer) cut it. Saves the hand-off to a request thread
        and back (a thread start and a wake-up: milliseconds on a loaded machine). Raises as
        ``_request``."""
        slots = self.slots(role)
        slots.acquire()
        try:
            msg = bound.invoke(convo)
        except Exception as exc:  # noqa: BLE001 - classified below
            if _classify(exc)[0] == "timeout":
                raise _Resend("timeout", f"no answer within the {self._timeout(role):g} s timeout (cut)") from exc
            self._raise_failed(role, exc)
        finally:
            slots.release()
        return msg, None, None

    def _raise_failed(self, role: str, exc: BaseException) -> None:
        """Raise what a failed request means: the interrupt itself, ``_Resend`` for a kind that is re-sent
        (RETRIED_KINDS), LLMRequestFailed (bad_request), else LLMUnavailable; each with one line."""
        if is_interrupt(exc):
            raise exc
        kind, retry_after = _classify(exc)
        line = _one_line(exc, self.endpoint(role))
        if kind in RETRIED_KINDS:
            raise _Resend(kind, line, retry_after) from exc
        if kind == "bad_request":
            raise LLMRequestFailed(line, kind=kind) from exc
        raise LLMUnavailable(line, kind=kind) from exc


def _classify(exc: BaseException) -> tuple[str, float | None]:
    """(kind, Retry-After seconds or None) of an exception from the chat client (openai's classes)."""
    import httpx
    import openai

    if isinstance(exc, EndpointStatusError):
        return _status_kind(exc.status_code, exc.headers)
    if isinstance(exc, httpx.TimeoutException):
        return "timeout", None
    if isinstance(exc, httpx.TransportError):
        return "connection", None
    if isinstance(exc, openai.APITimeoutError):
        return "timeout", None
    if isinstance(exc, openai.APIConnectionError):
        return "connection", None
    if isinstance(exc, openai.APIStatusError):
        return _status_kind(exc.status_code, getattr(exc.response, "headers", None) or {})
    if isinstance(exc, TimeoutError):
        return "timeout", None
    if isinstance(exc, ConnectionError):
        return "connection", None
    return "error", None


def _status_kind(code: int, headers) -> tuple[str, float | None]:
    """(kind, Retry-After seconds or None) of an HTTP error status: 429 rate_limited, 5xx/408/409
    server_error, 401/403/404 refused, any other bad_request."""
    after = _retry_after(headers)
    if code == 429:
        return "rate_limited", after
    if code >= 500 or code in (408, 409):
        return "server_error", after
    if code in (401, 403, 404):
        return "refused", None
    return "bad_request", None


def _retry_after(headers) -> float | None:
    """Seconds a server asks to wait (``retry-after-ms``, or ``retry-after`` as seconds or an HTTP date),
    as the openai client reads them; None when absent or unreadable."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / scale)
        except ValueError:
            if name == "retry-after":
                try:
                    when = email.utils.parsedate_to_datetime(value)
                    return max(0.0, when.timestamp() - time.time())
                except (TypeError, ValueError):
                    return None
    return None


def _validation_line(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        e = exc.errors()[0]
        where = ".".join(str(x) for x in e["loc"]) or "answer"
        return f"{where}: {e['msg']}"
    return str(exc).splitlines()[0]


def _redact(text: str) -> str:
    return re.sub(r"(sk-|key=)[A-Za-z0-9_\-]+", r"\1***", text)


def _one_line(exc: BaseException, endpoint: str | None) -> str:
    text = _redact(" ".join(str(exc).split()) or type(exc).__name__)
    name = "(embedded)" if endpoint in (None, EMBEDDED) else endpoint
    return f"LLM endpoint {name} failed: {type(exc).__name__}: {text[:200]}"
