"""VLM OCR of one video's keyframes (tools.ocr.VlmOCR.read_many) against an OpenAI-compatible server on
127.0.0.1 that answers each request after a fixed latency (a stand-in for vLLM's per-request time): one
request at a time (``vlm_concurrency=1``, how it ran before) against ``vlm_concurrency`` in flight, in
the same run; prints the time of each, the server's peak of requests in flight and the ratio.

    python bench/bench_vlm_ocr.py [--frames 40] [--latency 0.05] [--concurrency 8] [--repeats 3]

``SlowVLM`` is the server (tests/tools/test_ocr_vlm.py uses it too): each answer names the frame it read
(``frame_name(data_url)``), so a caller can check the answers come back in the frames' order.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def frame_name(data_url: str) -> str:
    """What SlowVLM answers for an image: ``frame`` and 12 hex of the sha256 of its data URL."""
    return "frame " + hashlib.sha256(data_url.encode()).hexdigest()[:12]


class SlowVLM:
    """An OpenAI-compatible ``POST /v1/chat/completions`` on 127.0.0.1 (a thread per request) that answers
    ``frame_name`` of the request's image after ``latency_s`` (times ``1 + jitter`` for every other answer,
    so later requests may finish first); ``fail`` (a set of frame names) answers those with HTTP 500.
    Counts ``requests``, and ``peak`` requests in flight at once. A context manager (the server's thread)."""

    def __init__(self, latency_s: float = 0.05, jitter: float = 1.0, fail: set[str] | None = None):
        self.latency_s, self.jitter, self.fail = latency_s, jitter, set(fail or ())
        self.requests = self.current = self.peak = 0
        self.lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: the client's pooled connections are reused
            disable_nagle_algorithm = True  # else the body, written after the headers, waits ~40 ms for an ACK

            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.enter()
                try:
                    url = body["messages"][0]["content"][1]["image_url"]["url"]
                    name = frame_name(url)
                    slow = int(hashlib.sha256(url.encode()).hexdigest()[0], 16) % 2
                    time.sleep(owner.latency_s * (1 + owner.jitter * slow))
                    status, reply = (500, {"error": {"message": "boom"}}) if name in owner.fail else (200, {
                        "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": name}}],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}})
                finally:
                    owner.leave()
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def enter(self) -> None:
        with self.lock:
            self.requests += 1
            self.current += 1
            self.peak = max(self.peak, self.current)

    def leave(self) -> None:
        with self.lock:
            self.current -= 1

    def __enter__(self) -> SlowVLM:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def frames(folder: Path, n: int) -> list[Path]:
    """``n`` distinct small JPEG frames (Pillow)."""
    from PIL import Image

    out = []
    for i in range(n):
        path = folder / f"frame_{i:04d}.jpg"
        Image.new("RGB", (64, 36), (i * 37 % 256, i * 91 % 256, i * 13 % 256)).save(path, quality=90)
        out.append(path)
    return out


def main() -> None:
    from tools.ocr import OcrOptions, VlmOCR

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--latency", type=float, default=0.05, help="seconds the server takes per request")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, SlowVLM(a.latency, jitter=0.0) as srv:
        images = frames(Path(tmp), a.frames)
        best: dict[int, float] = {}
        peaks: dict[int, int] = {}
        for _ in range(a.repeats):
            for c in (1, a.concurrency):
                reader = VlmOCR(OcrOptions(backend="vlm", vlm_base_url=srv.base_url, vlm_model="bench",
                                           vlm_concurrency=c))
                srv.peak = 0
                t = time.perf_counter()
                results = reader.read_many(images)
                took = time.perf_counter() - t
                assert [r.text for r in results] == [frame_name_of(p) for p in images]
                best[c] = min(best.get(c, took), took)
                peaks[c] = srv.peak
    serial, concurrent = best[1], best[a.concurrency]
    print(f"VLM OCR of {a.frames} frames, server latency {a.latency * 1000:.0f} ms a request, best of {a.repeats}:")
    print(f"  one at a time (vlm_concurrency=1): {serial:.2f} s ({serial / a.frames * 1000:.1f} ms a frame), "
          f"peak in flight {peaks[1]}")
    print(f"  vlm_concurrency={a.concurrency}: {concurrent:.2f} s ({concurrent / a.frames * 1000:.1f} ms a frame), "
          f"peak in flight {peaks[a.concurrency]}")
    print(f"  ratio: {serial / concurrent:.2f}x faster")


def frame_name_of(path: Path) -> str:
    """``frame_name`` of the data URL VlmOCR sends for the JPEG at ``path``."""
    import base64

    return frame_name("data:image/jpeg;base64," + base64.b64encode(path.read_bytes()).decode())


if __name__ == "__main__":
    main()
