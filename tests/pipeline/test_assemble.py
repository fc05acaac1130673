import pytest

from pipeline import assemble
from pipeline.config import ClipConfig, OcrFilterConfig, PackConfig
from pipeline.tokens import count_tokens
from tools.ocr import OcrLine


def _words(text: str, start: float, per_word: float = 0.4) -> list:
    out = []
    t = start
    for w in text.split():
        out.append([t, t + per_word - 0.05, " " + w, 0.9])
        t += per_word
    return out


def _segments(sentences: list[str]) -> list[dict]:
    words, t = [], 0.0
    for s in sentences:
        ws = _words(s, t)
        words += ws
        t = ws[-1][1] + 0.6
    return [{"start_s": 0.0, "end_s": t, "text": " ".join(sentences), "words": words}]


def test_sentences_use_word_timestamps():
    spans = assemble.sentences(_segments(["One two three.", "Four five six seven?", "Eight"]))
    assert [s.text for s in spans] == ["One two three.", "Four five six seven?", "Eight"]
    assert spans[0].end < spans[1].start


def test_paragraphs_respect_bounds():
    sents = [f"sentence number {i} has some words in it." for i in range(30)]  # 8 words, ~3.2 s each
    paras = assemble.paragraphs(assemble.sentences(_segments(sents)), ClipConfig(min_seconds=10, max_seconds=20))
    assert len(paras) > 3
    for p in paras[:-1]:
        assert 10 <= p.end - p.start <= 20
    assert " ".join(p.text for p in paras) == " ".join(sents)


def test_clips_are_contiguous_and_cover_the_video():
    paras = [assemble.Span(1.0, 12.0, "a"), assemble.Span(13.0, 25.0, "b"), assemble.Span(26.0, 30.0, "c")]
    clips = assemble.clips(paras, duration=35.0)
    assert clips[0].start == 0.0 and clips[-1].end == 35.0
    assert all(a.end == b.start for a, b in zip(clips, clips[1:], strict=False))


def _lines(text: str, conf: float = 92.0) -> list[OcrLine]:
    return [OcrLine(line, conf, [conf] * len(line.split())) for line in text.splitlines()]


def test_ocr_filter_drops_repeats_and_empty_but_keeps_an_added_line():
    texts = ["Worked Example\nA cart has a mass of 2 kg",
             "Worked Example\nA cart has a mass of 2 kg",  # same slide again
             "Worked Example\nA cart has a mass of 2 kg\nForce = 6 newtons",  # one more line
             "~ .",
             "The Third Law\nEvery action has a reaction"]
    verdicts = assemble.filter_ocr([_lines(t) for t in texts], OcrFilterConfig())
    assert [(v.kept, v.reason) for v in verdicts] == [(True, None), (False, "ocr_repeat"), (True, None),
                                                      (False, "ocr_empty"), (True, None)]
    assert verdicts[2].kept_lines == ["Force = 6 newtons"]  # only the line the frame added


def test_ocr_filter_gives_each_revealed_bullet_once():
    bullets = ["Voltage pushes charge", "Current is the flow of charge", "Resistance slows the flow", "V = I x R"]
    frames = [_lines("\n".join(["© Ohm's Law, step by step", *(f"© {b}" for b in bullets[:n])])) for n in (1, 2, 3, 4)]
    verdicts = assemble.filter_ocr(frames, OcrFilterConfig())
    kept = [line for v in verdicts for line in v.kept_lines]
    assert kept == ["Ohm's Law, step by step", *bullets]  # bullet glyphs gone, every line once
    assert all(v.kept for v in verdicts)  # the last frame adds a short formula: still kept


@pytest.mark.parametrize("line, conf, keep", [
    ("Newton's Laws of Motion", 95, True),
    ("© Force depends on mass and acceleration", 90, True),
    ("¢ Acurrent of 2 amperes", 91, True),  # an article glued to its word by the OCR
    ("V = I x R", 88, True),
    ("F = m x a", 50, False),  # a formula read unsure
    ("¢V=IxR", 61.8, True),  # cursor.mp4: the bullet glyph glued to the formula lowers its one word's confidence
    ("= E = a", 69, False),  # what tesseract reads on the lecture hall's chalk boards: operators, no formula
    ("= a x", 58, False),
    ("zx + —", 50, False),
    ("= = soy", 54, False),
    ("ee Sal a", 30, False),  # chalk and faces
    ("Sa, =f Oe MOAT A (he", 31, False),  # a painting
    ("J doing", 61, False),
    ("thoobththe@bunsapitjeboub lente voltage", 90, False),  # two slides blended by a dissolve
    ("W equalsildimiesRoeres", 85, False),
    ("5 4", 80, False),
    ("eee aaa", 90, False),
])
def test_ocr_line_reads_like_text(line, conf, keep):
    assert assemble.ocr_line_verdict(OcrLine(line, conf, [conf] * len(line.split())), OcrFilterConfig())[0] is keep


def test_a_slide_shown_just_before_a_paragraph_ends_goes_with_the_next_paragraph():
    paras = [assemble.Span(0.6, 10.0, "about slide one"), assemble.Span(10.5, 20.0, "about slide two")]
    spans = assemble.clips(paras, duration=21.0)
    frames = [{"idx": 0, "time_s": 0.0}, {"idx": 1, "time_s": 9.8}]  # slide two appears 0.2 s before the end
    per = assemble.assign_keyframes(spans, frames, 21.0)
    assert [[k["idx"] for k in p] for p in per] == [[0], [1]]
    # ... or during the paragraph's last sentence, which introduces it
    per = assemble.assign_keyframes(spans, [{"idx": 0, "time_s": 0.0}, {"idx": 1, "time_s": 8.5}], 21.0)
    assert [[k["idx"] for k in p] for p in per] == [[0], [1]]
    # shown through most of the first paragraph instead: it belongs there
    per = assemble.assign_keyframes(spans, [{"idx": 0, "time_s": 0.0}, {"idx": 1, "time_s": 3.0},
                                            {"idx": 2, "time_s": 10.3}], 21.0)
    assert [[k["idx"] for k in p] for p in per] == [[0, 1], [2]]
    # a slide over several paragraphs goes with the first it fills; shown only in silence, where it is
    paras = [assemble.Span(0.0, 10.0, "a"), assemble.Span(10.0, 20.0, "b"), assemble.Span(20.0, 30.0, "c")]
    per = assemble.assign_keyframes(assemble.clips(paras, 40.0), [{"idx": 0, "time_s": 5.0},
                                                                  {"idx": 1, "time_s": 33.0}], 40.0)
    assert [[k["idx"] for k in p] for p in per] == [[], [0], [1]]


def test_per_clip_cap_keeps_the_last_and_the_most_changed():
    frames = [{"idx": i, "time_s": float(i), "ssim": s} for i, s in enumerate([1.0, 0.95, 0.3, 0.9, 0.5, 0.92])]
    kept, dropped = assemble.cap_keyframes(frames, 3)
    assert [k["idx"] for k in kept] == [2, 4, 5] and [k["idx"] for k in dropped] == [0, 1, 3]
    assert assemble.cap_keyframes(frames, 0) == (frames, [])


def _video(vid: str, n_clips: int, images_per_clip: int = 1) -> list[assemble.Position]:
    out = []
    for c in range(n_clips):
        for k in range(images_per_clip):
            out.append(assemble.Position(f"images/{vid}/{vid}@{c}.0_{c + 1}.0#{k}.jpg", None, None,
                                         {"video_id": vid, "type": "image"}))
        text = f"clip {c} of {vid} says something about physics and motion."
        out.append(assemble.Position(None, text, text, {"video_id": vid, "type": "text"}))
    return out


def _exactly_one(sample: dict) -> bool:
    return all((i is None) != (t is None) for i, t in zip(sample["images"], sample["texts"], strict=True))


def test_pack_video_mode_one_sample_per_video_with_the_released_counts():
    samples = assemble.pack([_video("a", 3), _video("b", 2)], PackConfig(mode="video"))
    assert len(samples) == 2
    assert all(_exactly_one(s) for s in samples)
    s = samples[0]
    assert s["image_num"] == 3
    assert s["text_num"] == sum(count_tokens(t) for t in s["texts"] if t) > 3  # ASR tokens, not text positions
    assert s["token_num"] == s["text_num"] + 3 * assemble.LLAVA_IMAGE_TOKENS  # their estimate: 576 per image
    # the budget's price per image (the trainer's, 64 by default) never changes what token_num means
    priced = assemble.pack([_video("a", 3)], PackConfig(mode="video", image_tokens=64))[0]
    assert priced["token_num"] == s["token_num"]


def test_pack_concat_puts_marker_between_videos():
    cfg = PackConfig(mode="concat", max_tokens=10_000)
    samples = assemble.pack([_video("a", 2), _video("b", 2)], cfg)
    assert len(samples) == 1
    texts = samples[0]["texts"]
    assert texts.count(cfg.eov_marker) == 1
    marker = texts.index(cfg.eov_marker)
    assert {m.get("video_id") for m in samples[0]["metadata"][:marker]} == {"a"}
    assert _exactly_one(samples[0])
    assert samples[0]["text_num"] == sum(count_tokens(t) for t in texts if t and t != cfg.eov_marker)


def test_pack_split_and_concat_respect_the_budget():
    videos = [_video("a", 6), _video("b", 6)]
    for mode in ("split", "concat"):
        cfg = PackConfig(mode=mode, max_tokens=40)
        samples = assemble.pack(videos, cfg)
        assert len(samples) > 2
        assert all(sum(count_tokens(t) for t in s["text_ocr_list"] if t) <= 40 for s in samples)
        assert all(_exactly_one(s) for s in samples)
        assert all(s["texts"][-1] != cfg.eov_marker and s["texts"][0] != cfg.eov_marker for s in samples)
        # no clip is cut: every image is followed (eventually) by its clip's text in the same sample
        assert all(s["texts"][-1] is not None for s in samples)
        if mode == "split":
            assert all(len({m.get("video_id") for m in s["metadata"]}) == 1 for s in samples)


def test_pack_max_images():
    samples = assemble.pack([_video("a", 5, images_per_clip=3)], PackConfig(mode="split", max_images=6))
    assert [s["image_num"] for s in samples] == [6, 6, 3]


def _text_only(vid: str, n_clips: int) -> list[assemble.Position]:
    return [assemble.Position(None, f"clip {c} of {vid} talks.", f"clip {c} of {vid} talks.",
                              {"video_id": vid, "type": "text"}) for c in range(n_clips)]


def test_pack_writes_no_sample_without_an_image():
    assert assemble.pack([_text_only("a", 3), _video("b", 1)], PackConfig(mode="video"))[0]["metadata"][0][
        "video_id"] == "b"
    split = assemble.pack([_text_only("a", 6) + _video("a", 2)], PackConfig(mode="split", max_tokens=20))
    assert split and all(s["image_num"] > 0 for s in split)
    assert assemble.pack([_text_only("a", 3)], PackConfig(mode="concat")) == []


def _store_rows(polished: str | None = None):
    video = {"video_id": "vid-1", "source": "/home/alice/lessons/physics/newton.mp4",
             "public_source": "physics/newton.mp4", "subject": "physics", "course": "mechanics",
             "subcourse": "dynamics", "knowledge_point": "Newton's second law", "difficulty": 2.0}
    clips = [{"idx": 0, "start_s": 0.0, "end_s": 12.345, "text": "Force is mass <image> times acceleration.",
              "polished": polished, "keyframes": [0, 1], "decision": "keep"},
             {"idx": 1, "start_s": 12.345, "end_s": 20.0, "text": "A talking head.", "polished": None,
              "keyframes": [2], "decision": "drop_frames"},
             {"idx": 2, "start_s": 20.0, "end_s": 31.5, "text": "Dropped.", "polished": None, "keyframes": [],
              "decision": "drop"}]
    frames = {0: {"idx": 0, "time_s": 1.0, "path": "/m/0.jpg", "ocr_text": "F = m a <|endoftext|>", "ocr_kept": True},
              1: {"idx": 1, "time_s": 7.5, "path": "/m/1.jpg", "ocr_text": "repeat", "ocr_kept": False},
              2: {"idx": 2, "time_s": 15.0, "path": "/m/2.jpg", "ocr_text": "face", "ocr_kept": True}}
    return video, clips, frames


def test_interleave_carries_the_curriculum_and_a_public_source():
    video, clips, frames = _store_rows()
    pos = assemble.interleave(video, clips, frames)
    assert [(p.image is not None, p.meta["type"]) for p in pos] == [(True, "image"), (True, "image"),
                                                                   (False, "text"), (False, "text")]
    for p in pos:
        m = p.meta
        assert (m["subject"], m["course"], m["subcourse"], m["knowledge_point"], m["difficulty"]) == \
            ("physics", "mechanics", "dynamics", "Newton's second law", 2)
        assert m["source"] == "physics/newton.mp4" and isinstance(m["difficulty"], int)
    assert [p.image for p in pos[:2]] == ["images/vid-1/vid-1_0-12345_1.jpg", "images/vid-1/vid-1_0-12345_2.jpg"]
    assert [p.meta["keyframe_index"] for p in pos[:2]] == [1, 2]
    # the speaker's and the slide's special tokens are defused; the dropped-frames clip keeps its text only
    assert pos[2].text == "Force is mass image times acceleration."
    assert pos[2].text_ocr == "F = m a |endoftext|\nForce is mass image times acceleration."
    assert pos[3].text == "A talking head." and pos[3].text_ocr == "A talking head."
    old = dict(video, public_source=None)  # a row from before migration 006: the file name, never the path
    assert assemble.interleave(old, clips, frames)[0].meta["source"] == "newton.mp4"


def test_interleave_keeps_the_raw_asr_of_a_rewrite():
    video, clips, frames = _store_rows(polished="Force equals mass times acceleration.")
    text = assemble.interleave(video, clips, frames)[2]
    assert text.text == "Force equals mass times acceleration."
    assert text.meta["raw_asr"] == "Force is mass image times acceleration."


def test_image_names():
    assert assemble.image_name("abc_D-1", 10, 55.0, 1) == "abc_D-1/abc_D-1_10000-55000_2.jpg"
    assert assemble.released_image_name("-1uixJ1V-As", 10.0, 55.0, 1) == "-1uixJ1V-As/-1uixJ1V-As@10.0_55.0#2.jpg"
    assert assemble.released_image_name("v", 12.345, 20, 0) == "v/v@12.345_20.0#1.jpg"


def test_escape_special_tokens():
    esc = assemble.escape_special_tokens
    assert esc("a <image><IMAGE> b </s> <|im_start|> <row_1_col_2> <fake_token_around_image>") == \
        "a imageIMAGE b /s |im_start| row_1_col_2 fake_token_around_image"
    assert esc("x < y and a<b>c, 3 <= 4") == "x < y and a<b>c, 3 <= 4"  # ordinary text stays
