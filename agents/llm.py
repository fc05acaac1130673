"""The LLM gateway: the one place a model is called.

Every call renders a prompt file, looks up the response cache (key: model, role, rendered
messages, parameters, output schema), calls the role's model through langchain
(ChatOpenAI for any OpenAI-compatible server), validates the answer against a pydantic
model with re-asks that feed the validation error back, and writes one ``llm_calls`` row:
node, role, prompt name and sha256, model, messages, response, tokens, cost, latency,
attempts, error. A cached answer is logged too (``cached``) and costs nothing, so a rerun
or a resumed run pays no call twice. API keys are read from the environment at call time
and never reach the store.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, ValidationError

import prompts
from agents.config import ROLES, LLMConfig

log = logging.getLogger(__name__)


class LLMUnavailable(Exception):
    """The endpoint cannot be reached or refused the request (one line for the user)."""


class LLMOutputInvalid(Exception):
    """The model never produced an answer that validates."""

    def __init__(self, message: str, call_id: str):
        super().__init__(message)
        self.call_id = call_id


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
                      extra_body=extra)


def role_model_name(cfg: LLMConfig, role: str) -> str:
    over = cfg.roles.get(role)
    return (over.model if over and over.model else None) or cfg.model


def _json_from_text(text: str) -> Any:
    """The first JSON object in a reply (models without tool calls often wrap it in prose or fences)."""
    text = text.strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    start = text.find("{")
    while start != -1:
        depth = 0
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                try:
                    return json.loads(text[start:i + 1])
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
    """Calls models by role for one run; see the module docstring."""

    def __init__(self, store, run_id: str, cfg: LLMConfig, models: dict[str, BaseChatModel] | None = None,
                 budget=None):
        self.store = store
        self.run_id = run_id
        self.cfg = cfg
        self._models = dict(models or {})
        self.budget = budget

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

    def call(self, role: str, node: str, prompt_name: str, values: dict[str, Any],
             schema: type[BaseModel] | None = None, video_id: str | None = None) -> Answer:
        prompt = prompts.load(prompt_name)
        messages = prompt.render(values)
        model_name = role_model_name(self.cfg, role)
        params = self._params(role)
        key = hashlib.sha256(json.dumps({
            "model": model_name, "role": role, "messages": messages, "params": params,
            "schema": schema.model_json_schema() if schema else None}, sort_keys=True).encode()).hexdigest()
        call_id = uuid.uuid4().hex
        row = {"call_id": call_id, "run_id": self.run_id, "node": node, "role": role, "video_id": video_id,
               "prompt_name": prompt.name, "prompt_sha256": prompt.sha256, "model": model_name, "cache_key": key,
               "messages": messages}

        hit = self.store.llm_cache_get(key)
        if hit is not None:
            # an answer that never validated is cached too: the same call fails the same way at
            # temperature 0, so a rerun replays the failure instead of paying for it again
            failed = hit["response"].get("__invalid__") if isinstance(hit["response"], dict) else None
            self.store.record_llm_call({**row, "cached": True, "response": hit["response"],
                                        "input_tokens": hit["input_tokens"], "output_tokens": hit["output_tokens"],
                                        "tokens_estimated": False, "cost_usd": 0.0, "latency_s": 0.0, "attempts": 0,
                                        "error": failed})
            if failed is not None:
                raise LLMOutputInvalid(f"{prompt_name}: no valid answer (cached: {failed})", call_id)
            value = schema.model_validate(hit["response"]) if schema else hit["response"]
            return Answer(value, call_id, True)

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
        try:
            bound = self.model(role)
            if schema is not None:
                try:
                    bound = bound.bind_tools([schema], tool_choice=schema.__name__)
                except NotImplementedError:
                    pass
            for attempt in range(1, self.cfg.retries + 2):
                attempts = attempt
                try:
                    msg = bound.invoke(convo)
                except Exception as exc:  # connection, HTTP, timeouts: one line for the user
                    raise LLMUnavailable(_one_line(exc, self.cfg.base_url)) from exc
                usage = getattr(msg, "usage_metadata", None) or {}
                if usage.get("input_tokens") is not None:
                    tokens_in += int(usage.get("input_tokens") or 0)
                    tokens_out += int(usage.get("output_tokens") or 0)
                else:
                    estimated = True
                    tokens_in += _estimate_tokens("".join(m["content"] for m in messages))
                    tokens_out += _estimate_tokens(str(msg.content) + json.dumps(msg.tool_calls or []))
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
                    convo = [*convo, AIMessage(content=raw if isinstance(raw, str) else json.dumps(raw)),
                             HumanMessage(content=f"That answer is invalid: {error}. Answer again with valid "
                                                  f"arguments for {schema.__name__}.")]
        except LLMUnavailable as exc:
            error = str(exc)
            raise
        finally:
            latency = time.perf_counter() - t0
            cost = (tokens_in * self.cfg.price_in_per_mtok + tokens_out * self.cfg.price_out_per_mtok) / 1e6
            response = value.model_dump(mode="json") if isinstance(value, BaseModel) else raw
            self.store.record_llm_call({**row, "cached": False, "response": response, "input_tokens": tokens_in,
                                        "output_tokens": tokens_out, "tokens_estimated": estimated,
                                        "cost_usd": cost, "latency_s": latency, "attempts": attempts,
                                        "error": error})
        if error is not None:
            if params["temperature"] == 0:
                self.store.llm_cache_put(key, model_name, {"__invalid__": error, "raw": response}, tokens_in,
                                         tokens_out)
            raise LLMOutputInvalid(f"{prompt_name}: no valid answer after {attempts} tries ({error})", call_id)
        self.store.llm_cache_put(key, model_name, response, tokens_in, tokens_out)
        return Answer(value, call_id, False)


def _validation_line(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        e = exc.errors()[0]
        where = ".".join(str(x) for x in e["loc"]) or "answer"
        return f"{where}: {e['msg']}"
    return str(exc).splitlines()[0]


def _one_line(exc: Exception, base_url: str | None) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = re.sub(r"(sk-|key=)[A-Za-z0-9_\-]+", r"\1***", text)
    return f"LLM endpoint {base_url or '(embedded)'} failed: {type(exc).__name__}: {text[:200]}"
