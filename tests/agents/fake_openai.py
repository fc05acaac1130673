"""A deterministic OpenAI-compatible chat server on 127.0.0.1 for CLI tests.

It answers /v1/chat/completions with a tool call whose arguments come from a script keyed
by the requested tool's name (the same scripts as tests/agents/scripted.py), or, when the
request has a ``response_format`` (json_schema or llama.cpp's json_object + schema), with the
JSON as the message content; it reports token usage, counts requests, and calls
``after(name)`` once each answer is sent (a test can signal the client there), so a test can
drive the real ChatOpenAI client and the real CLI deterministically.
Run standalone: ``python -m tests.agents.fake_openai PORT``.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.agents.scripted import physics_script


class FakeOpenAI:
    def __init__(self, script: dict | None = None, port: int = 0):
        self.script = script or physics_script()
        self.requests: list[dict] = []
        self.after = None  # called with the answered schema's name after each answer is sent
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                outer.requests.append(body)
                tools = body.get("tools") or []
                rf = body.get("response_format") or {}
                name = (tools[0]["function"]["name"] if tools else (rf.get("json_schema") or {}).get("name")
                        or (rf.get("schema") or {}).get("title") or "text")
                user = [m["content"] for m in body.get("messages", []) if m["role"] == "user"]
                fn = outer.script.get(name)
                if fn is None:
                    self._send(400, {"error": {"message": f"no script for {name}"}})
                    return
                args = fn("\n".join(str(u) for u in user))
                if tools:
                    message = {"role": "assistant", "content": None,
                               "tool_calls": [{"id": f"call_{len(outer.requests)}", "type": "function",
                                               "function": {"name": name, "arguments": json.dumps(args)}}]}
                else:
                    message = {"role": "assistant", "content": json.dumps(args)}
                self._send(200, {"id": f"chatcmpl-{len(outer.requests)}", "object": "chat.completion",
                                 "created": 0, "model": body.get("model", "scripted"),
                                 "choices": [{"index": 0, "message": message,
                                              "finish_reason": "tool_calls" if tools else "stop"}],
                                 "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150}})
                self.wfile.flush()
                if outer.after is not None:
                    outer.after(name)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


if __name__ == "__main__":
    with FakeOpenAI(port=int(sys.argv[1])) as srv:
        print(srv.base_url, flush=True)
        threading.Event().wait()
