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
- **Hard timeouts**: each request runs on a worker thread; at ``timeout_s`` it is cut (a
  streamed answer closes its connection, which stops the server's generation) and the call
  is recorded as failed with kind ``timeout`` (``LLMTimeout``), never a hang.
- **Nothing paid twice**: an answer goes into the response cache the moment it validates,
  inside ``agents.interrupts.protected()``; an interrupt that arrives while a request is in
  flight waits ``grace_s`` for its answer and saves it before the process stops. A cache hit
  is logged as a ``cached`` row once per run (a rerun of the same run logs nothing new).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, ValidationError

import prompts
from agents.config import ROLES, LLMConfig
from agents.interrupts import is_interrupt, protected

log = logging.getLogger(__name__)


class LLMUnavailable(Exception):
    """The endpoint cannot be reached or refused the request (one line for the user)."""


class LLMOutputInvalid(Exception):
    """The model never produced an answer that validates (``kind`` "invalid"), or ran out of time."""

    kind = "invalid"

    def __init__(self, message: str, call_id: str):
        super().__init__(message)
        self.call_id = call_id


class LLMTimeout(LLMOutputInvalid):
    """A request ran past ``timeout_s`` and was cut (not cached: the next run asks again)."""

    kind = "timeout"


class BudgetExceeded(Exception):
    """A run budget is spent; ``name`` says which (tokens, usd, search_units, videos, wall_time)."""

    def __init__(self, name: str, detail: str):
        super().__init__(f"budget {name} spent: {detail}")
        self.name = name


@dataclass
class Answer:
    value: Any                    # the validated pydantic object, or the text
    call_id: str
    cached: bool


def make_chat_model(cfg: LLMConfig, role: str) -> BaseChatModel:
    """ChatOpenAI for the role's endpoint; the key comes from the environment, never from the store."""
    from langchain_openai import ChatOpenAI

    over = cfg.roles.get(role)

    def pick(name: str) -> Any:
        return getattr(over, name) if over and getattr(over, name) is not None else getattr(cfg, name)

    key = os.environ.get(pick("api_key_env")) or "not-needed"
    # langchain-openai sends max_completion_tokens; llama.cpp's server reads only max_tokens
    extra = {"max_tokens": pick("max_tokens")} if cfg.legacy_max_tokens else None
    return ChatOpenAI(base_url=pick("base_url"), model=pick("model"), api_key=key, temperature=pick("temperature"),
                      max_tokens=pick("max_tokens"), timeout=cfg.timeout_s, max_retries=cfg.http_retries,
                      extra_body=extra, stream_usage=True)


def role_model_name(cfg: LLMConfig, role: str) -> str:
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


def grammar_schema(schema: type[BaseModel]) -> dict:
    """The model's JSON schema for a grammar-based decoder: small integer ranges as enums (llama.cpp's
    schema-to-grammar ignores minimum/maximum), descriptions and titles kept."""
    out = copy.deepcopy(schema.model_json_schema())

    def fix(node: dict) -> None:
        if node.get("type") == "integer" and "minimum" in node and "maximum" in node \
                and node["maximum"] - node["minimum"] <= 20:
            node["enum"] = list(range(int(node["minimum"]), int(node["maximum"]) + 1))

    _walk(out, fix)
    return out


def strict_schema(schema: type[BaseModel]) -> dict:
    """The model's JSON schema in OpenAI's strict form: every object closed (additionalProperties
    false) with every property required; defaults dropped (the model writes every field)."""
    out = copy.deepcopy(schema.model_json_schema())

    def fix(node: dict) -> None:
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


def schema_hint(schema: type[BaseModel]) -> str:
    """A short plain-text description of the answer's JSON object, appended to the system message when the
    schema is enforced by response_format (the model does not see a tool definition then)."""
    js = schema.model_json_schema()
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


def _estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _to_lc(messages: list[dict]) -> list:
    kinds = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
    return [kinds[m["role"]](content=m["content"]) for m in messages]


class Gateway:
    """Calls models by role for one run; see the module docstring.

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

    def model(self, role: str) -> BaseChatModel:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        if role not in self._models:
            self._models[role] = make_chat_model(self.cfg, role)
        return self._models[role]

    def _params(self, role: str) -> dict:
        over = self.cfg.roles.get(role)
        t = over.temperature if over and over.temperature is not None else self.cfg.temperature
        m = over.max_tokens if over and over.max_tokens is not None else self.cfg.max_tokens
        return {"temperature": t, "max_tokens": m}

    def _bind(self, role: str, schema: type[BaseModel] | None, mode: str):
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

    def call(self, role: str, node: str, prompt_name: str, values: dict[str, Any],
             schema: type[BaseModel] | None = None, video_id: str | None = None) -> Answer:
        """Ask ``role``'s model; return a validated Answer. Raises LLMOutputInvalid (never valid),
        LLMTimeout (cut at ``timeout_s``), LLMUnavailable (endpoint down), BudgetExceeded."""
        prompt = prompts.load(prompt_name)
        mode = structured_mode(self.cfg)
        messages = prompt.render(values)
        if schema is not None and mode != "tools":
            # in the system message: the same for every call of a task, so the server reuses its KV cache
            messages[0]["content"] += "\n\n" + schema_hint(schema)
        model_name = role_model_name(self.cfg, role)
        params = self._params(role)
        key = hashlib.sha256(json.dumps({
            "model": model_name, "role": role, "messages": messages, "params": params, "structured": mode,
            "schema": schema.model_json_schema() if schema else None}, sort_keys=True).encode()).hexdigest()
        call_id = uuid.uuid4().hex
        row = {"call_id": call_id, "run_id": self.run_id, "node": node, "role": role, "video_id": video_id,
               "prompt_name": prompt.name, "prompt_sha256": prompt.sha256, "model": model_name, "cache_key": key,
               "messages": messages}

        hit = self.store.llm_cache_get(key)
        if hit is not None:
            return self._replay(hit, row, schema, prompt_name)

        if self.budget is not None:
            self.budget.check_llm()
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
            for attempt in range(1, self.cfg.retries + 2):
                attempts = attempt
                msg, chunks, pending = self._request(role, bound, convo, stream)
                usage = getattr(msg, "usage_metadata", None) or {}
                if usage.get("input_tokens") is not None:
                    tokens_in += int(usage.get("input_tokens") or 0)
                    tokens_out += int(usage.get("output_tokens") or 0)
                else:
                    estimated = True
                    tokens_in += _estimate_tokens("".join(m["content"] for m in messages))
                    tokens_out += chunks or _estimate_tokens(str(msg.content) + json.dumps(msg.tool_calls or []))
                if schema is None:
                    raw = value = str(msg.content)
                    error = None
                    break
                raw = msg.tool_calls[0]["args"] if msg.tool_calls else str(msg.content)
                try:
                    data = raw if isinstance(raw, dict) else _json_from_text(raw)
                    value = schema.model_validate(data)
                    error = None
                    break
                except (ValueError, ValidationError) as exc:
                    error = _validation_line(exc)
                    if pending is not None:
                        break  # interrupted: no re-ask
                    convo = [*convo, AIMessage(content=raw if isinstance(raw, str) else json.dumps(raw)),
                             HumanMessage(content=f"That answer is invalid: {error}. Answer again with valid "
                                                  f"arguments for {schema.__name__}.")]
            response = value.model_dump(mode="json") if isinstance(value, BaseModel) else raw
            with protected():  # the answer reaches the cache before any interrupt can act
                if error is None:
                    self.store.llm_cache_put(key, model_name, response, tokens_in, tokens_out)
                elif params["temperature"] == 0 and pending is None:
                    # at temperature 0 the same call fails the same way: replay the failure, don't pay again
                    self.store.llm_cache_put(key, model_name, {"__invalid__": error, "raw": response}, tokens_in,
                                             tokens_out)
                self._record(row, response, tokens_in, tokens_out, estimated, t0, attempts, error)
                recorded = True
        except (LLMUnavailable, LLMTimeout) as exc:
            error = str(exc)
            if not recorded:
                self._record(row, raw, tokens_in, tokens_out, estimated, t0, attempts, error)
            if isinstance(exc, LLMTimeout):
                exc.call_id = call_id
            raise
        except BaseException:
            if not recorded and attempts:
                self._record(row, raw, tokens_in, tokens_out, estimated, t0, attempts, "interrupted")
            raise
        if pending is not None:
            raise pending
        if error is not None:
            raise LLMOutputInvalid(f"{prompt_name}: no valid answer after {attempts} tries ({error})", call_id)
        return Answer(value, call_id, False)

    def _record(self, row: dict, response: Any, tokens_in: int, tokens_out: int, estimated: bool, t0: float,
                attempts: int, error: str | None) -> None:
        cost = (tokens_in * self.cfg.price_in_per_mtok + tokens_out * self.cfg.price_out_per_mtok) / 1e6
        with protected():
            self.store.record_llm_call({**row, "cached": False, "response": response, "input_tokens": tokens_in,
                                        "output_tokens": tokens_out, "tokens_estimated": estimated,
                                        "cost_usd": cost, "latency_s": time.perf_counter() - t0,
                                        "attempts": attempts, "error": error})

    def _replay(self, hit: dict, row: dict, schema, prompt_name: str) -> Answer:
        """A cache hit: logged once per run (a rerun of the same run adds no row), costs nothing."""
        # an answer that never validated is cached too: the same call fails the same way at
        # temperature 0, so a rerun replays the failure instead of paying for it again
        failed = hit["response"].get("__invalid__") if isinstance(hit["response"], dict) else None
        call_id = self.store.llm_call_for_key(self.run_id, row["cache_key"])
        if call_id is None:
            call_id = row["call_id"]
            with protected():
                self.store.record_llm_call({**row, "cached": True, "response": hit["response"],
                                            "input_tokens": hit["input_tokens"],
                                            "output_tokens": hit["output_tokens"], "tokens_estimated": False,
                                            "cost_usd": 0.0, "latency_s": 0.0, "attempts": 0, "error": failed})
        if failed is not None:
            raise LLMOutputInvalid(f"{prompt_name}: no valid answer (cached: {failed})", call_id)
        value = schema.model_validate(hit["response"]) if schema else hit["response"]
        return Answer(value, call_id, True)

    def same_model(self, role_a: str, role_b: str) -> bool:
        """True when two roles resolve to the same model, endpoint and parameters: at temperature 0 they
        would give the same answer to the same prompt."""
        def key(role: str) -> tuple:
            over = self.cfg.roles.get(role)
            base = over.base_url if over and over.base_url else self.cfg.base_url
            return role_model_name(self.cfg, role), base, tuple(sorted(self._params(role).items())), \
                id(self._models[role]) if role in self._given else None

        return key(role_a) == key(role_b) and self._params(role_a)["temperature"] == 0

    def _timeout(self, role: str) -> float:
        return float(self.cfg.timeout_s)

    def _request(self, role: str, bound, convo: list, stream: bool) -> tuple[AIMessage, int | None,
                                                                           BaseException | None]:
        """One request on a worker thread, cut at the role's timeout. Returns (message, streamed chunks,
        an interrupt that arrived while the answer was on its way, to raise once it is saved)."""
        box: dict[str, Any] = {}
        done, cancel = threading.Event(), threading.Event()
        progress = self.on_progress

        def work() -> None:
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
                done.set()

        thread = threading.Thread(target=work, name=f"llm-{role}", daemon=True)
        thread.start()
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
            raise LLMTimeout(f"no answer within the {timeout:.0f} s timeout (cut)", "")
        if "error" in box:
            exc = box["error"]
            if is_interrupt(exc):
                raise exc
            raise LLMUnavailable(_one_line(exc, self.cfg.base_url)) from exc
        return box["msg"], box.get("chunks"), None


def _validation_line(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        e = exc.errors()[0]
        where = ".".join(str(x) for x in e["loc"]) or "answer"
        return f"{where}: {e['msg']}"
    return str(exc).splitlines()[0]


def _one_line(exc: BaseException, base_url: str | None) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = re.sub(r"(sk-|key=)[A-Za-z0-9_\-]+", r"\1***", text)
    return f"LLM endpoint {base_url or '(embedded)'} failed: {type(exc).__name__}: {text[:200]}"
