"""The visual clip filter in a whole build (issue 21 part 4): a generated narrated lesson (espeak-ng, ffmpeg) whose
first paragraph is said over a slide showing it and whose second is said over a channel end card, built against
the OpenAI-compatible stand-in (its captioner reads the keyframes with tesseract). With the filter, the end
card's clip keeps its text and loses its image; without it, both images are in the samples and nothing is
captioned."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from agents.build import BuildSpec, run_build
from agents.config import AgentConfig, LLMConfig, RoleConfig, TaxonomySize
from agents.standin import StandIn
from pipeline.config import PipelineConfig
from store import open_store
from tests.agents.test_visual_filter import END_CARD, SLIDE, _frame

pytestmark = pytest.mark.slow  # a real build: whisper ASR, keyframes, tesseract, MiniLM

SAID = ["The first step of the water cycle is evaporation. The sun heats the water in lakes and oceans. "
        "The water turns into vapour, and the vapour rises into the air above us.",
        "Higher up, the vapour cools down and condenses into tiny droplets. The droplets come together and "
        "form the clouds we see in the sky."]
RATE = 22050


def _speech(text: str, path: Path) -> np.ndarray:
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(path), text], check=True)
    with wave.open(str(path)) as w:
        assert w.getframerate() == RATE
        return np.frombuffer(w.readframes(w.getnframes()), np.int16)


@pytest.fixture(scope="module")
def lesson(tmp_path_factory) -> Path:
    """A folder with water_cycle.mp4 (+ its sidecar): the slide from 0 s, the first paragraph said from 0.5 s;
    the second said from 1 s after the first ends, the end card shown 1 s after that, to the end."""
    tmp = tmp_path_factory.mktemp("vfbuild")
    a, b = _speech(SAID[0], tmp / "a.wav"), _speech(SAID[1], tmp / "b.wav")
    b_start = 0.5 + len(a) / RATE + 1.0
    card_at, duration = b_start + 1.0, b_start + len(b) / RATE + 1.0
    audio = np.zeros(int(duration * RATE), np.int16)
    audio[int(0.5 * RATE): int(0.5 * RATE) + len(a)] = a
    audio[int(b_start * RATE): int(b_start * RATE) + len(b)] = b
    with wave.open(str(tmp / "narration.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(RATE)
        w.writeframes(audio.tobytes())
    slide, card = _frame(tmp / "slide.jpg", SLIDE), _frame(tmp / "card.jpg", END_CARD)
    folder = tmp / "library"
    folder.mkdir()
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-loop", "1", "-t", f"{card_at:.3f}", "-i", str(slide),
                    "-loop", "1", "-t", f"{duration - card_at:.3f}", "-i", str(card), "-i", str(tmp / "narration.wav"),
                    "-filter_complex", "[0:v][1:v]concat=n=2:v=1:a=0,fps=10,format=yuv420p[v]", "-map", "[v]",
                    "-map", "2:a", "-c:v", "libx264", "-c:a", "aac", "-shortest", str(folder / "water_cycle.mp4")],
                   check=True)
    (folder / "water_cycle.json").write_text('{"title": "The water cycle", "subject": "earth science", '
                                             '"knowledge_point": "The water cycle", "language": "en"}')
    return folder


def _build(store, folder: Path, out: Path, base_url: str, captioner: bool) -> dict:
    roles = {"captioner": RoleConfig(model="standin-vl")} if captioner else {}
    llm = LLMConfig(base_url=base_url, model="standin", structured="json_schema", roles=roles)
    agent = AgentConfig(llm=llm, sources=[f"local:{folder}"], library_points=False, max_rounds=1,
                        taxonomy=TaxonomySize(courses=1, subcourses=1, points=1), results_per_query=1,
                        min_relevance=0.0, min_fit=0.0, polish=False, enforce_judges="yes")
    return run_build(store, BuildSpec("build an earth science textbook", agent, PipelineConfig(), out))


def _positions(store, run_id: str) -> list[tuple[str | None, str | None]]:
    return [(Path(i).name if i else None, t) for s in store.samples(run_id)
            for i, t in zip(s["images"], s["texts"], strict=True)]


def test_the_end_cards_clip_keeps_its_text_and_loses_its_image(lesson, tmp_path):
    store = open_store(tmp_path / "vf.duckdb")
    try:
        with StandIn() as srv:
            on = _build(store, lesson, tmp_path / "on", srv.base_url, captioner=True)
            off = _build(store, lesson, tmp_path / "off", srv.base_url, captioner=False)
        assert on["accepted_videos"] == 1 and not on["failed"] and off["accepted_videos"] == 1
        assert on["judge_modes"]["visual_filter"].startswith("enforced (captioner standin-vl, frames dropped under ")
        assert "visual_filter" not in off["judge_modes"]
        vid = store.candidates(on["run_id"])[0]["video_id"]
        judged = {j["kind"]: j for j in store.judgments(on["run_id"], vid) if j["kind"].startswith("clip:")}
        with_filter, without = _positions(store, on["run_id"]), _positions(store, off["run_id"])
        captions = [c for c in store.llm_calls(on["run_id"]) if c["role"] == "captioner"]
        assert not [c for c in store.llm_calls(off["run_id"]) if c["role"] == "captioner"]
    finally:
        store.close()
    texts = [t for _, t in without if t]
    assert len(texts) == 2 and "sun heats" in texts[0].lower() and "condenses" in texts[1].lower()
    assert [t for _, t in with_filter if t] == texts  # the ASR text of both clips stays
    assert sum(1 for i, _ in without if i) == 2  # without the filter: the slide and the end card
    images = [i for i, _ in with_filter if i]
    assert len(images) == 1 and images[0] == next(i for i, _ in without if i)  # only the slide is left
    assert len(captions) == 2 and all("base64" not in str(c["messages"]) for c in captions)
    assert {k: j["verdict"] for k, j in judged.items()} == {"clip:0": "keep", "clip:1": "drop_frames"}
    sims = [judged[k]["detail"]["caption_asr_similarity"] for k in ("clip:0", "clip:1")]
    assert sims[0] >= AgentConfig().caption_min_similarity > sims[1]
    why = f"visual filter: caption-ASR similarity {sims[1]:.2f} < "
    assert any(r.startswith(why) for r in judged["clip:1"]["reasons"])
