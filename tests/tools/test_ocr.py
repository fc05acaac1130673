import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from tests.conftest import truth
from tools import keyframes, ocr
from tools.errors import ToolError


def _norm(s: str) -> str:
    return "".join(ch for ch in s.lower() if ch.isalnum())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["physics_newton", "chemistry_atoms", "earth_no_audio", "math_quiet_tone"])
def test_ocr_recovers_every_slide_title(lessons, tmp_path, name):
    slides = truth(name)["slides"]
    result = keyframes.detect(lessons / f"{name}.mp4", tmp_path)
    texts = [r.text for r in ocr.TesseractOCR().read_many([k.path for k in result.keyframes])]
    assert len(texts) == len(slides)
    for slide, text in zip(slides, texts, strict=True):
        assert _norm(slide["title"]) in _norm(text), f"{slide['title']!r} not in {text!r}"


def test_ocr_reads_formula(lessons, tmp_path):
    result = keyframes.detect(lessons / "physics_newton.mp4", tmp_path)
    text = ocr.TesseractOCR().read(result.keyframes[2].path).text
    assert "F=mxa" in text.replace(" ", "")


class _FakeVLM(BaseHTTPRequestHandler):
    requests: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _FakeVLM.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        reply = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                 "choices": [{"index": 0, "finish_reason": "stop",
                              "message": {"role": "assistant", "content": "The Second Law\nF = m \\times a"}}],
                 "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_vlm_backend_sends_image_to_openai_compatible_endpoint(lessons, tmp_path, monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), _FakeVLM)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("TEST_VLM_KEY", "sk-test-not-stored")
    try:
        frame = keyframes.detect(lessons / "physics_newton.mp4", tmp_path).keyframes[2]
        opts = ocr.OcrOptions(backend="vlm", vlm_base_url=f"http://127.0.0.1:{server.server_port}/v1",
                              vlm_model="internvl2", vlm_api_key_env="TEST_VLM_KEY")
        result = ocr.make_reader(opts).read(frame.path)
    finally:
        server.shutdown()
    assert result.text == "The Second Law\nF = m \\times a"
    assert result.engine == "vlm internvl2"
    sent = _FakeVLM.requests[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["auth"] == "Bearer sk-test-not-stored"
    parts = sent["body"]["messages"][0]["content"]
    assert parts[1]["image_url"]["url"].startswith("data:image/jpeg;base64,/9j/")
    assert "sk-test" not in json.dumps(result.options)


def test_unknown_backend():
    with pytest.raises(ToolError):
        ocr.make_reader(ocr.OcrOptions(backend="magic"))


def _lines(text: str) -> list[str]:
    return [_norm(line) for line in text.splitlines() if _norm(line)]


@pytest.mark.slow
def test_short_titles_on_a_title_bar_are_read(tmp_path):
    """Issue 20: one-word titles on a coloured bar were lost by tesseract's page layout; the title
    region read as one line gives them, and no line is read twice."""
    from bench._slides import read_title, slides

    one_word = ["Solids", "Gases", "Acids", "Bases"]
    group = slides(tmp_path / "bar", one_word + ["States of Matter", "Chemical Bonds"])
    group += slides(tmp_path / "plain", ["Metals", "Salts"], bar=False)
    paths = [p for p, _ in group]
    read = ocr.TesseractOCR().read_many(paths)
    assert [t for r, (_, t) in zip(read, group, strict=True) if not read_title(r.text, t)] == []
    for r in read:
        assert len(_lines(r.text)) == len(set(_lines(r.text))) == 4, r.text  # the title and the three bullets
        assert [line.top for line in r.lines] == sorted(line.top for line in r.lines)
    pages_only = ocr.TesseractOCR(ocr.OcrOptions(title_psm=0)).read_many(paths[:4])
    assert sum(read_title(r.text, t) for r, t in zip(pages_only, one_word, strict=True)) < 2  # what the pass adds


def test_title_band_finds_the_bar_or_the_first_line(tmp_path):
    import numpy as np
    from PIL import Image

    from bench._slides import slide

    def band(path):
        return ocr.title_band(np.asarray(Image.open(path).convert("RGB")))

    top, bottom, dark = band(slide("Gases", tmp_path / "dark.png", variant=0))  # a 82 px navy bar, white title
    assert top == 0 and abs(bottom - 82) <= 3 and dark
    assert band(slide("Gases", tmp_path / "light.png", variant=3))[2] is False  # a yellow bar, dark title
    top, bottom, dark = band(slide("Gases", tmp_path / "plain.png", bar=False))  # no bar: the title line
    assert 0 <= top < 25 and 45 < bottom < 90 and not dark
    assert ocr.title_band(np.full((480, 854, 3), 255, np.uint8)) is None  # a blank frame has none
