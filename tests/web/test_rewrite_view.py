"""The video page shows each clip's rewrite: the diff of the raw text and the text kept (the rewrite used, or
the raw text with its slide fixes), which text was kept and why (refusal reasons, no valid answer, advisory),
the model's rewrite that was not kept, the slide-term fixes and the swaps put back."""

from __future__ import annotations

from fastapi.testclient import TestClient

from store import open_store
from textbook.web.app import create_app, rewrite_view
from textbook.web.backend import FileBackend

RUN, VID = "run-rewrite-view", "vid-rewrite-0001"


def _clip(idx: int, text: str, polished: str | None, check: dict | None) -> dict:
    return {"idx": idx, "start_s": idx * 5.0, "end_s": idx * 5.0 + 5, "text": text, "n_tokens": 5, "keyframes": [],
            "decision": "drop_frames", "reason": "no_keyframes", "polished": polished, "rewrite": check}


def test_rewrite_view_of_refused_accepted_and_unasked_clips():
    refused = {"status": "refused", "reasons": ["adds droplets: neither said nor on the slide"],
               "kinds": ["adds"], "corrections": [], "reverted": [], "rewrite": "tiny droplets", "kept": "raw"}
    got = rewrite_view({"text": "water rises", "polished": None, "rewrite": refused})
    assert got["refused"] == "adds droplets: neither said nor on the slide" and got["kept"] == "the raw text"
    assert got["diff"] is None  # the raw text kept as it is
    assert got["unused"] == [("-", "water rises"), ("+", "tiny droplets")]  # the refused rewrite, shown apart
    # refused, the paragraph grounded: the raw text with its slide fix is kept, and the diff shows that fix
    fixed = {**refused, "kept": "slide_fixed", "slide_fixes": [["in operation", "Evaporation"]],
             "rewrite": "first comes evaporation and tiny droplets"}
    got = rewrite_view({"text": "first comes in operation", "polished": "first comes evaporation", "rewrite": fixed})
    assert got["kept"] == "the raw text with its slide fixes" and got["fixes"] == ["in operation → Evaporation"]
    assert got["diff"] == [(" ", "first comes"), ("-", "in operation"), ("+", "evaporation")]
    ok = {"status": "accepted", "reasons": [], "corrections": [["in operation", "evaporation"]],
          "reverted": [["vent wrinkles", "aorta"]], "rewrite": "evaporation", "kept": "rewrite"}
    got = rewrite_view({"text": "in operation", "polished": "evaporation", "rewrite": ok})
    assert got["refused"] is None and got["fixes"] == ["in operation → evaporation"] and got["unused"] is None
    assert got["reverted"] == ["vent wrinkles → aorta"] and got["kept"] == "the rewrite"
    assert rewrite_view({"text": "raw", "polished": None, "rewrite": None}) == \
        {"diff": None, "kept": None, "refused": None, "no_answer": None, "advisory": None, "unused": None,
         "fixes": [], "reverted": []}
    advisory = {**ok, "advisory": "advisory: not measured", "kept": "raw"}  # accepted, not used
    got = rewrite_view({"text": "in operation", "polished": None, "rewrite": advisory})
    assert got["advisory"] == "advisory: not measured" and got["diff"] is None and got["fixes"] == []
    assert got["unused"] == [("-", "in operation"), ("+", "evaporation")]
    none = {"status": "no_answer", "reasons": ["no valid answer: garbage"], "kinds": [], "corrections": [],
            "reverted": [], "rewrite": None, "kept": "raw"}
    got = rewrite_view({"text": "water rises", "polished": None, "rewrite": none})
    assert got["no_answer"] == "no valid answer: garbage" and got["unused"] is None and got["refused"] is None
    old = {k: v for k, v in ok.items() if k != "kept"}  # stored before the record said which text was kept
    assert rewrite_view({"text": "in operation", "polished": "evaporation", "rewrite": old})["kept"] == "the rewrite"


def test_video_page_shows_the_kept_text_and_the_refusal_reason_escaped(tmp_path):
    db = tmp_path / "view.duckdb"
    store = open_store(db)
    try:
        store.start_run(RUN, "build", ["build a water textbook"], {"agent": {}, "pipeline": {}}, "h")
        store.upsert_video({"video_id": VID, "source": "/tmp/x.mp4", "title": "Water"})
        bad = {"status": "refused", "reasons": ["adds <script>alert(1)</script>: neither said nor on the slide"],
               "kinds": ["adds"], "corrections": [], "reverted": [], "kept": "slide_fixed",
               "slide_fixes": [["in operation", "Evaporation"]],
               "rewrite": "The water cycle begins with tiny droplets. First comes evaporation."}
        good = {"status": "accepted", "reasons": [], "kinds": [], "corrections": [["heat", "heats"]],
                "reverted": [], "rewrite": "The sun heats the water.", "kept": "rewrite"}
        store.save_clips(VID, "clipshash", [_clip(0, "First comes in operation.", "First comes evaporation.", bad),
                                            _clip(1, "The sun heat the water.", "The sun heats the water.", good)])
        assert store.clips(VID, "clipshash")[0]["rewrite"] == bad  # the store keeps the record as JSON
    finally:
        store.close()
    r = TestClient(create_app(FileBackend(db))).get(f"/runs/{RUN}/videos/{VID}")
    assert r.status_code == 200
    assert "rewrite refused: adds &lt;script&gt;alert(1)&lt;/script&gt;" in r.text
    assert "<script>alert(1)" not in r.text
    assert "kept: the raw text with its slide fixes" in r.text and "kept: the rewrite" in r.text
    # raw -> kept: the slide fix is the diff; the refused rewrite is shown apart, not as the clip's text
    assert "First comes <del>in operation.</del> <ins>evaporation.</ins>" in r.text
    assert "slide-term fixes: in operation → Evaporation" in r.text
    assert "not kept: <ins>The water cycle begins with tiny droplets.</ins> First comes" in r.text
    assert "slide-term fixes: heat → heats" in r.text
