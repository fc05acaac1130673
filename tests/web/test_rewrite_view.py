"""The video page shows each clip's rewrite check: the diff of the raw text and the rewrite used, or of the
refused rewrite with the refusal reason (raw text kept), the slide-term fixes and the swaps put back."""

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
               "kinds": ["adds"], "corrections": [], "reverted": [], "rewrite": "tiny droplets"}
    got = rewrite_view({"text": "water rises", "polished": None, "rewrite": refused})
    assert got["refused"] == "adds droplets: neither said nor on the slide"
    assert got["diff"] == [("-", "water rises"), ("+", "tiny droplets")]
    ok = {"status": "accepted", "reasons": [], "corrections": [["in operation", "evaporation"]],
          "reverted": [["vent wrinkles", "aorta"]], "rewrite": "evaporation"}
    got = rewrite_view({"text": "in operation", "polished": "evaporation", "rewrite": ok})
    assert got["refused"] is None and got["fixes"] == ["in operation → evaporation"]
    assert got["reverted"] == ["vent wrinkles → aorta"]
    assert rewrite_view({"text": "raw", "polished": None, "rewrite": None}) == \
        {"diff": None, "refused": None, "advisory": None, "fixes": [], "reverted": []}
    advisory = {**ok, "advisory": "advisory: not measured"}  # accepted, not used: the raw text kept
    got = rewrite_view({"text": "in operation", "polished": None, "rewrite": advisory})
    assert got["advisory"] == "advisory: not measured" and got["diff"] == [("-", "in operation"),
                                                                           ("+", "evaporation")]


def test_video_page_shows_the_refusal_reason_escaped(tmp_path):
    db = tmp_path / "view.duckdb"
    store = open_store(db)
    try:
        store.start_run(RUN, "build", ["build a water textbook"], {"agent": {}, "pipeline": {}}, "h")
        store.upsert_video({"video_id": VID, "source": "/tmp/x.mp4", "title": "Water"})
        bad = {"status": "refused", "reasons": ["adds <script>alert(1)</script>: neither said nor on the slide"],
                "kinds": ["adds"], "corrections": [], "reverted": [], "rewrite": "The water cycle begins with tiny "
                                                                                 "droplets."}
        good = {"status": "accepted", "reasons": [], "kinds": [], "corrections": [["in operation", "evaporation"]],
                "reverted": [], "rewrite": "First comes evaporation."}
        store.save_clips(VID, "clipshash", [_clip(0, "First comes in operation.", "First comes evaporation.", good),
                                            _clip(1, "The sun heats the water.", None, bad)])
        assert store.clips(VID, "clipshash")[1]["rewrite"] == bad  # the store keeps the check as JSON
    finally:
        store.close()
    r = TestClient(create_app(FileBackend(db))).get(f"/runs/{RUN}/videos/{VID}")
    assert r.status_code == 200
    assert "rewrite refused, raw text kept: adds &lt;script&gt;alert(1)&lt;/script&gt;" in r.text
    assert "<script>alert(1)" not in r.text
    assert "<ins>water cycle begins with tiny droplets.</ins>" in r.text  # the refused rewrite, shown
    assert "slide-term fixes: in operation → evaporation" in r.text
