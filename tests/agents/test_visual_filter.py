"""The paper's visual clip filter (agents/visual_filter.py, issue 21 part 4) in the build's clip stage, over real
HTTP to the stand-in captioner (agents/standin.py: its caption is what tesseract reads on the keyframes), on
generated keyframes: a slide whose text is what the clip says keeps its frames; an end card the rules keep
loses them and keeps its ASR text; every caption is an llm_calls row without the image bytes; the filter off
asks nothing and decides as before; a failing captioner fails the video, never drops its frames."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

import prompts
from agents import visual_filter
from agents.config import AgentConfig, LLMConfig, RoleConfig
from agents.deps import Deps
from agents.llm import Gateway, LLMRequestFailed
from agents.stages import JudgedClipsStage
from agents.standin import Fault, StandIn, ocr_caption
from pipeline.config import PipelineConfig
from pipeline.records import Clip, Video
from pipeline.stage import Context
from store import open_store
from tools.ocr import TesseractOCR

FONTS = Path("/usr/share/fonts/truetype/dejavu")
RUN = "build-visualfilter"
SLIDE = ["Evaporation", "The sun heats the water", "Water turns into vapour", "Vapour rises into the air"]
END_CARD = ["Subscribe to our channel", "New videos every Friday", "Like and share"]
# the clips' ASR paragraphs: the first is what the slide shows, the second (condensation) is not on the end card
# shown over it, the third is said over a frame with no text at all
SAID = ["so the first step is evaporation the sun heats the water in lakes and oceans and the water turns into "
        "vapor which rises up into the air",
        "when the vapor rises it cools down and condenses into tiny droplets and the droplets come together to "
        "form clouds",
        "and when the droplets get heavy they fall back down as rain snow or hail"]


def _frame(path: Path, lines: list[str]) -> Path:
    """A 480p keyframe as a JPEG: the lines in black on white (the first in bold), or, with no lines, a
    speaker: a head and shoulders on a grey-blue background, no text."""
    from PIL import Image, ImageDraw, ImageFont

    im = Image.new("RGB", (854, 480), (255, 255, 255) if lines else (90, 110, 140))
    draw = ImageDraw.Draw(im)
    if not lines:
        draw.ellipse((367, 90, 487, 220), fill=(230, 190, 160))
        draw.rectangle((307, 230, 547, 480), fill=(40, 60, 90))
    for i, line in enumerate(lines):
        font = ImageFont.truetype(str(FONTS / ("DejaVuSans-Bold.ttf" if i == 0 else "DejaVuSans.ttf")),
                                  44 if i == 0 else 30)
        draw.text((50, 50 + i * 80), line, fill=(0, 0, 0), font=font)
    im.save(path, quality=90)
    return path


@pytest.fixture(scope="module")
def lesson(tmp_path_factory) -> tuple[list[Clip], dict[int, dict]]:
    """Three clips with their keyframes (files on disk, OCR by tesseract as the pipeline keeps it): the
    matching slide, the end card, the speaker."""
    folder = tmp_path_factory.mktemp("keyframes")
    paths = [_frame(folder / "t000001000.jpg", SLIDE), _frame(folder / "t000011000.jpg", END_CARD),
             _frame(folder / "t000021000.jpg", [])]
    read = TesseractOCR().read_many(paths)
    frames = {i: {"idx": i, "path": str(p), "time": 1.0 + 10 * i, "ocr_text": r.text, "ocr_kept": bool(r.text)}
              for i, (p, r) in enumerate(zip(paths, read, strict=True))}
    assert "Evaporation" in frames[0]["ocr_text"] and "Subscribe" in frames[1]["ocr_text"]
    assert not frames[2]["ocr_text"]
    return [Clip(idx=i, start_s=10.0 * i, end_s=10.0 * (i + 1), text=t, n_tokens=len(t.split()), keyframes=[i])
            for i, t in enumerate(SAID)], frames


@pytest.fixture
def store(tmp_path):
    s = open_store(tmp_path / "vf.duckdb")
    yield s
    s.close()


def _agent(base_url: str, **over) -> AgentConfig:
    roles = {"captioner": RoleConfig(model="standin-vl", base_url=base_url)}
    llm = LLMConfig(base_url=base_url, model="standin", structured="json_schema", roles=roles, http_retries=1,
                    backoff_s=0.05, timeout_s=20)
    return AgentConfig(llm=llm, **{"polish": False, "clip_judge": "rules", **over})


def _decide(store, tmp_path, agent: AgentConfig, lesson) -> list[Clip]:
    """The build's clip stage deciding the lesson's clips, as the build runs it (gateway over HTTP)."""
    clips, frames = lesson
    gateway = Gateway(store, RUN, agent.llm)
    deps = Deps(store=store, gateway=gateway, cfg=agent, runner=None, sources=[], budget=None, downloads=tmp_path)
    stage = JudgedClipsStage(Context(store, PipelineConfig(), tmp_path / "media", run_id=RUN), deps)
    try:
        fresh = [Clip.from_dict(c.as_dict()) for c in clips]
        return stage.judge(Video(video_id="lesson1", source="lesson1.mp4"), fresh, frames)
    finally:
        gateway.close()


def test_the_matching_slide_keeps_its_frames_and_the_end_card_loses_them_but_keeps_its_text(store, tmp_path, lesson):
    with StandIn() as srv:
        clips = _decide(store, tmp_path, _agent(srv.base_url), lesson)
        log = list(srv.log)
    slide, card, speaker = clips
    assert slide.decision == "keep"
    assert slide.signals["caption_asr_similarity"] >= AgentConfig().caption_min_similarity
    # the rules keep the end card (20+ OCR characters); the caption says what is on it, which is not what is said
    assert "rules: similarity" in card.reason and card.decision == "drop_frames"
    sim = card.signals["caption_asr_similarity"]
    assert sim < AgentConfig().caption_min_similarity
    assert f"visual filter: caption-ASR similarity {sim:.2f} < 0.27" in card.reason
    assert card.text == SAID[1] and card.keyframes == [1]  # the text stays in the sample; only the frames go
    # the rules already drop the speaker's frames (no text on screen, nothing in common): no caption asked
    assert speaker.decision == "drop_frames" and "caption_asr_similarity" not in speaker.signals
    assert [e["images"] for e in log] == [1, 1]
    judged = {j["kind"]: j for j in store.judgments(RUN, "lesson1")}
    assert judged["clip:1"]["verdict"] == "drop_frames" and judged["clip:1"]["detail"]["caption_asr_similarity"] == sim


def test_each_caption_is_an_llm_calls_row_with_the_image_elided(store, tmp_path, lesson):
    with StandIn() as srv:
        clips = _decide(store, tmp_path, _agent(srv.base_url), lesson)
    calls = [c for c in store.llm_calls(RUN) if c["role"] == "captioner"]
    assert len(calls) == 2 and {c["call_id"] for c in calls} == {c.signals["caption_call_id"] for c in clips[:2]}
    by_name = {Path(f["path"]).name: f for f in lesson[1].values()}
    for call in calls:
        assert call["node"] == "clips" and call["prompt_name"] == "caption" and call["model"] == "standin-vl"
        assert call["video_id"] == "lesson1" and not call["error"]
        messages = call["messages"] if isinstance(call["messages"], list) else json.loads(call["messages"])
        text = json.dumps(messages)
        frame = by_name[messages[-1]["content"][1]["image_url"]["url"].rsplit(": ", 1)[1].rstrip(")")]
        data = Path(frame["path"]).read_bytes()
        assert base64.b64encode(data).decode()[:40] not in text and "base64" not in text
        image = messages[-1]["content"][1]["image_url"]["url"]
        assert image.startswith(f"(image/jpeg, {len(data)} bytes, sha256 ") and image.endswith(": "
                                                                                            f"{Path(frame['path']).name})")
        assert str(Path(frame["path"]).parent) not in text  # no build-machine path
    by_response = {json.loads(c["response"])["text"] for c in calls}
    assert any("Evaporation" in r for r in by_response) and any("Subscribe" in r for r in by_response)


def test_a_rerun_pays_no_caption_again(store, tmp_path, lesson):
    with StandIn() as srv:
        first = _decide(store, tmp_path, _agent(srv.base_url), lesson)
        again = _decide(store, tmp_path, _agent(srv.base_url), lesson)
        requests = srv.requests
    assert requests == 2  # the second run's captions come from the response cache (same images, same prompt)
    assert [c.decision for c in again] == [c.decision for c in first]


def test_the_filter_off_asks_nothing_and_decides_as_before(store, tmp_path, lesson):
    with StandIn() as srv:
        off = _decide(store, tmp_path, _agent(srv.base_url, visual_filter="off"), lesson)
        assert srv.requests == 0
    # a build without a captioner role: the filter is off by default (auto), the same decisions
    plain = AgentConfig(llm=LLMConfig(base_url="http://127.0.0.1:9/v1", model="x"), polish=False, clip_judge="rules")
    assert not plain.caption_filter_on() and not AgentConfig().caption_filter_on()
    before = _decide(store, tmp_path, plain, lesson)
    assert [(c.decision, c.reason, c.signals) for c in off] == [(c.decision, c.reason, c.signals) for c in before]
    assert [c.decision for c in off] == ["keep", "keep", "drop_frames"]  # the rules alone keep the end card


def _policy_hash(store, tmp_path, agent: AgentConfig) -> str:
    deps = Deps(store=store, gateway=Gateway(store, RUN, agent.llm), cfg=agent, runner=None, sources=[],
                budget=None, downloads=tmp_path)
    return JudgedClipsStage(Context(store, PipelineConfig(), tmp_path / "m", run_id=RUN), deps).policy_hash()


def test_the_filters_settings_and_prompt_are_in_the_clips_policy_hash(store, tmp_path):
    on = _agent("http://127.0.0.1:9/v1")
    h = _policy_hash(store, tmp_path, on)
    for change in ({"visual_filter": "off"}, {"caption_min_similarity": 0.4}, {"caption_max_images": 2},
                   {"enforce_judges": "no"}):
        assert _policy_hash(store, tmp_path, on.model_copy(update=change)) != h, change
    assert visual_filter.policy(on)[-1] == prompts.load("caption").sha256
    # off, the filter's settings are not hashed: a store made before the filter keeps its clips
    plain = AgentConfig(llm=LLMConfig(base_url="http://127.0.0.1:9/v1", model="x"))
    assert _policy_hash(store, tmp_path, plain) == _policy_hash(
        store, tmp_path, plain.model_copy(update={"caption_min_similarity": 0.5, "visual_filter": "off"}))


def test_a_failing_captioner_fails_the_video_and_drops_nothing(store, tmp_path, lesson):
    with StandIn(faults=[Fault("503", match="keyframes of one clip")]) as srv:
        with pytest.raises(LLMRequestFailed) as caught:
            _decide(store, tmp_path, _agent(srv.base_url, on_invalid="accept"), lesson)
    assert caught.value.kind == "server_error"
    failed = [c for c in store.llm_calls(RUN) if c["role"] == "captioner"]
    assert failed and all(c["error_kind"] == "server_error" for c in failed)
    assert not [j for j in store.judgments(RUN, "lesson1") if j["verdict"] == "drop_frames" and
                "visual filter" in " ".join(j["reasons"])]


def test_an_empty_caption_is_re_asked_then_takes_the_policy_and_says_so(store, tmp_path, lesson):
    with StandIn(captioner=lambda images: "") as srv:
        kept = _decide(store, tmp_path, _agent(srv.base_url, on_invalid="accept"), lesson)
        asked = srv.requests
        _decide(store, tmp_path, _agent(srv.base_url, on_invalid="accept"), lesson)
        again = srv.requests - asked
    assert kept[1].decision == "keep" and "visual filter: accept by policy (no valid answer" in kept[1].reason
    assert "the answer is empty" in kept[1].reason
    assert asked == again == 2 * 3  # two clips, each asked 1 + agent.llm.retries (2) times; never cached
    failed = [c for c in store.llm_calls(RUN) if c["role"] == "captioner"]
    assert len(failed) == 4 and all(c["error_kind"] == "invalid_output" for c in failed)
    with StandIn(captioner=lambda images: "  ") as srv, pytest.raises(Exception) as caught:
        _decide(store, tmp_path, _agent(srv.base_url, on_invalid="fail"), lesson)
    assert getattr(caught.value, "kind", None) == "invalid_output"


def test_advisory_judges_keep_the_frames_and_record_the_filters_verdict(store, tmp_path, lesson):
    with StandIn() as srv:
        clips = _decide(store, tmp_path, _agent(srv.base_url, enforce_judges="no"), lesson)
    assert clips[1].decision == "keep" and "(advisory: kept)" in clips[1].reason


def test_the_stand_in_captions_what_is_on_the_images(lesson):
    frames = lesson[1]
    slide, card, speaker = (Path(frames[i]["path"]).read_bytes() for i in range(3))
    caption = ocr_caption([slide, speaker])
    assert caption.startswith("2 keyframes. Frame 1: a slide with the text \"Evaporation")
    assert "Frame 2: no readable text" in caption
    assert "Subscribe to our channel" in ocr_caption([card])


def test_the_captioner_needs_a_vision_model_and_an_endpoint():
    with pytest.raises(ValueError, match="visual_filter = caption needs a vision model"):
        AgentConfig(visual_filter="caption")
    with pytest.raises(ValueError, match="needs an OpenAI-compatible vision endpoint"):
        AgentConfig(llm=LLMConfig(roles={"captioner": RoleConfig(model="qwen2-vl")}))
    assert AgentConfig(llm=LLMConfig(roles={"captioner": RoleConfig(model="qwen2-vl", base_url="http://h/v1")})) \
        .caption_filter_on()
    assert not AgentConfig(visual_filter="off", llm=LLMConfig(roles={"captioner": RoleConfig(
        model="qwen2-vl", base_url="http://h/v1")})).caption_filter_on()


def test_at_most_the_cap_of_keyframes_evenly_spaced():
    assert visual_filter.evenly(list(range(10)), 4) == [0, 3, 6, 9]
    assert visual_filter.evenly([1, 2], 4) == [1, 2]
    assert visual_filter.evenly(list(range(5)), 1) == [2]


@pytest.mark.parametrize("judge_says, captions", [("keep", 3), ("drop_frames", 0)])
def test_the_filter_is_one_more_drop_after_the_clip_judge(store, tmp_path, lesson, judge_says, captions):
    """The LLM clip judge decides first; only the clips whose frames it keeps are captioned, and the filter can
    only drop: with the judge keeping all three, the end card and the speaker (captioned "no readable text")
    lose their frames; with the judge dropping every clip's frames, nothing is captioned."""
    with StandIn(choices={"decision": judge_says}) as srv:
        clips = _decide(store, tmp_path, _agent(srv.base_url, clip_judge="llm", enforce_judges="yes"), lesson)
        log = list(srv.log)
    assert sum(1 for e in log if e["images"]) == captions
    assert sum(1 for e in log if e["schema"] == "ClipDecision") == 3
    want = ["keep", "drop_frames", "drop_frames"] if judge_says == "keep" else ["drop_frames"] * 3
    assert [c.decision for c in clips] == want


def test_a_keyframe_under_an_object_store_is_sent_by_its_bytes_and_named_by_its_file(s3_bucket, lesson):
    from tools import storage

    frame = lesson[1][0]
    uri = storage.join(s3_bucket, "media", "keyframes", "lesson1", "t000001000.jpg")
    storage.put_file(frame["path"], uri)
    image = visual_filter.keyframe_image({**frame, "path": uri})
    assert image.data == Path(frame["path"]).read_bytes() and image.name == "t000001000.jpg"
    assert image.mime == "image/jpeg" and s3_bucket not in json.dumps(image.logged_part())
