"""The gateway's lean path to an OpenAI-compatible endpoint: one pooled httpx client per endpoint.

``ChatOpenAI.invoke`` costs ~2 ms of Python a request (langchain's callbacks and the openai SDK's
recursive transform of the request parameters), so at a few hundred requests a second the caller's
interpreter, not the endpoint, set the pace (issue 19: 32 paid calls/s against 577 requests/s from
a bare client). ``DirectChat`` sends the very body ChatOpenAI would send (built by ChatOpenAI once
per role, schema and structured mode: ``request_base``) with the messages of each call, and reads
the answer into the same ``AIMessage`` (content, tool calls, usage metadata). It serves
non-streamed requests of the roles whose model the gateway made itself; handed-in models and
streamed answers keep going through langchain.

Errors: ``httpx.TimeoutException``, ``httpx.TransportError`` (cannot connect, connection lost) as
httpx raises them, and ``EndpointStatusError`` for an HTTP status >= 400
(``agents.llm._classify`` turns each into a kind).
"""

from __future__ import annotations

import json
import socket
import threading

import httpx
from langchain_core.messages import AIMessage, BaseMessage

_ROLES = {"system": "system", "human": "user", "ai": "assistant"}


class EndpointStatusError(Exception):
    """The endpoint answered an HTTP status >= 400: ``status_code``, ``headers`` (for Retry-After), and
    the start of its body in the message."""

    def __init__(self, status_code: int, headers: httpx.Headers, body: str):
        super().__init__(f"Error code: {status_code} - {body[:300]}")
        self.status_code = status_code
        self.headers = headers


def http_client(limit: int, timeout_s: float) -> httpx.Client:
    """A pooled client for one endpoint: up to ``limit`` connections open and kept alive (one per request
    in flight), TCP_NODELAY (a POST's headers and body go out apart: Nagle plus a delayed ACK would add
    ~40 ms), ``timeout_s`` seconds per connect, read and write."""
    transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
                                    limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit))
    return httpx.Client(transport=transport, timeout=timeout_s)


def request_base(model, bound_kwargs: dict) -> dict:
    """The request body ChatOpenAI ``model`` sends with ``bound_kwargs`` (tools, tool_choice,
    response_format), without its messages, not streamed, ``extra_body`` merged in as the openai
    client merges it."""
    from langchain_core.messages import HumanMessage

    body = model._get_request_payload([HumanMessage(content="")], **bound_kwargs)
    body.pop("messages", None)
    body.pop("stream_options", None)
    body["stream"] = False
    body.update(body.pop("extra_body", None) or {})
    return body


class DirectChat:
    """``invoke(messages) -> AIMessage`` for one role, schema and mode over ``client`` (shared by the
    endpoint's roles). ``url``: the endpoint's base URL (``.../v1``); ``api_key``: sent as a Bearer
    token, never stored; ``base``: ``request_base``'s body. Thread-safe."""

    def __init__(self, client: httpx.Client, url: str, api_key: str, base: dict):
        self.client = client
        self.url = url.rstrip("/") + "/chat/completions"
        self.headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self.base = base

    def invoke(self, messages: list[BaseMessage]) -> AIMessage:
        """One request; the answer as langchain's ChatOpenAI gives it. Raises EndpointStatusError,
        httpx.TimeoutException, httpx.TransportError."""
        body = {**self.base, "messages": [{"role": _ROLES[m.type], "content": m.content} for m in messages]}
        resp = self.client.post(self.url, content=json.dumps(body).encode(), headers=self.headers)
        if resp.status_code >= 400:
            raise EndpointStatusError(resp.status_code, resp.headers, resp.text)
        return to_message(resp.json())


def to_message(data: dict) -> AIMessage:
    """An OpenAI chat completion (JSON) as langchain's AIMessage: content, tool calls (arguments that are
    not JSON go to ``invalid_tool_calls``, as langchain does), usage as ``usage_metadata``."""
    choice = (data.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    calls, invalid = [], []
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        try:
            args = json.loads(fn.get("arguments") or "{}")
            calls.append({"name": fn.get("name"), "args": args, "id": call.get("id"), "type": "tool_call"})
        except ValueError as exc:
            invalid.append({"name": fn.get("name"), "args": fn.get("arguments"), "id": call.get("id"),
                            "error": str(exc), "type": "invalid_tool_call"})
    usage = data.get("usage") or None
    meta = None
    if usage:
        tin, tout = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        meta = {"input_tokens": tin, "output_tokens": tout, "total_tokens": tin + tout}
    return AIMessage(content=message.get("content") or "", tool_calls=calls, invalid_tool_calls=invalid,
                     usage_metadata=meta, response_metadata={"finish_reason": choice.get("finish_reason"),
                                                             "model_name": data.get("model")})


class Clients:
    """One ``http_client`` per endpoint, made on first use, closed by ``close()``. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[str, httpx.Client] = {}

    def get(self, endpoint: str, limit: int, timeout_s: float) -> httpx.Client:
        """The endpoint's client (``limit`` connections, ``timeout_s`` seconds)."""
        with self._lock:
            if endpoint not in self._clients:
                self._clients[endpoint] = http_client(limit, timeout_s)
            return self._clients[endpoint]

    def close(self) -> None:
        """Close every client (their pooled connections)."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            c.close()

