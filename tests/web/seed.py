"""Rows for the viewer's tests and benchmark, written through the store's own methods.

``build_run``: a small build over videos the real pipeline processed (chemistry_atoms, physics_newton),
with judgments, LLM calls and events, and one candidate whose title, description, comments and model
answer are hostile HTML. ``synthetic``: a large build (candidates, judgments, samples) for pagination
and page-time checks, inserted in bulk with SQL.
"""

from __future__ import annotations

import json

XSS_TITLE = "<img src=x onerror=alert(1)>"
XSS_DESCRIPTION = "</script><script>alert(2)</script>"
XSS_ID = "xss-video-0001"
BUILD_RUN = "build-webtest00001"


def _video_id(store, prefix: str) -> str:
    return store.rows("SELECT video_id FROM videos WHERE video_id LIKE ?", [prefix + "%"])[0]["video_id"]


def build_run(store) -> dict:
    """A finished build run with two real videos and a hostile one; returns their ids."""
    chem, newton = _video_id(store, "chemistry_atoms"), _video_id(store, "physics_newton")
    cfg = {"agent": {"budgets": {"max_videos": 4, "max_search_units": 3000, "max_llm_tokens": 100000,
                                 "max_usd": None, "max_wall_s": None}}, "pipeline": {}, "out": "/tmp/out"}
    store.start_run(BUILD_RUN, "build", ["build a <b>physics</b> textbook"], cfg, "webtest")
    store.save_taxonomy(BUILD_RUN, [
        {"node_id": "s1", "parent_id": None, "level": "subject", "name": "Physics", "position": 0},
        {"node_id": "s1.c1", "parent_id": "s1", "level": "course", "name": "Mechanics", "position": 1},
        {"node_id": "s1.c1.u1", "parent_id": "s1.c1", "level": "subcourse", "name": "Forces", "position": 2},
        {"node_id": "s1.c1.u1.p1", "parent_id": "s1.c1.u1", "level": "point", "name": "Newton's laws of motion",
         "position": 3},
        {"node_id": "s1.c1.u1.p2", "parent_id": "s1.c1.u1", "level": "point", "name": "Atoms and molecules",
         "position": 4}])
    store.upsert_video({"video_id": XSS_ID, "source": "https://example.invalid/watch?v=xss", "title": XSS_TITLE,
                        "metadata": {"description": XSS_DESCRIPTION}})
    found = [(newton, "s1.c1.u1.p1", "accepted", 8, "accept"), (chem, "s1.c1.u1.p2", "accepted", 7, "accept"),
             (XSS_ID, "s1.c1.u1.p1", "judged_out", 2, "reject")]
    for vid, point, status, score, verdict in found:
        title = XSS_TITLE if vid == XSS_ID else store.video(vid)["title"]
        meta = {"title": title, "description": XSS_DESCRIPTION if vid == XSS_ID else "a lesson",
                "channel": "<b>chan</b>", "duration_s": 35.0, "comments": [XSS_DESCRIPTION] if vid == XSS_ID else []}
        store.add_candidate(BUILD_RUN, vid, point, "local", f"file:///lessons/{vid}.mp4", "newton laws", 1, meta)
        call_id = f"call-{vid}"
        store.record_llm_call({
            "call_id": call_id, "run_id": BUILD_RUN, "node": "judge_metadata", "role": "metadata_judge",
            "video_id": vid, "prompt_name": "metadata_judge", "prompt_sha256": "ab" * 32, "model": "scripted",
            "cache_key": f"k-{vid}", "cached": False,
            "messages": [{"role": "user", "content": f"<untrusted name=\"title\">\n{title}\n</untrusted>"}],
            "response": {"verdict": verdict, "score": score, "reasons": [f"model says {XSS_DESCRIPTION}"]},
            "input_tokens": 120, "output_tokens": 30, "tokens_estimated": False, "cost_usd": 0.0001,
            "latency_s": 0.5, "attempts": 1, "error": None})
        store.save_judgment(BUILD_RUN, vid, "metadata", verdict, score, [f"reason for {title}"], None, call_id)
        store.update_candidate(BUILD_RUN, vid, status=status, reason=None if status == "accepted" else "judged out",
                               path=None)
        ev = store.event_start(BUILD_RUN, "judge_metadata", vid, None)
        store.event_end(ev, {"score": score}, decision=verdict, reasons=[f"reason for {title}"])
    for node in ("interpret_goal", "taxonomy", "plan_queries", "search_point", "judge_metadata", "download",
                 "asr", "judge_transcripts", "ocr", "clips", "coverage", "assemble"):
        ev = store.event_start(BUILD_RUN, node, None, {"round": 1})
        store.event_end(ev, {"ok": True})
    store.record_query(BUILD_RUN, "s1.c1.u1.p1", 1, "newton laws", "local", 3, 0, False)
    store.set_run_videos(BUILD_RUN, [newton, chem])
    # the process run's samples, as this build's own
    process = store.rows("SELECT run_id FROM runs WHERE command = 'process'")[0]["run_id"]
    samples = store.samples(process)
    store.save_samples(BUILD_RUN, "webtest", samples)
    store.finish_run(BUILD_RUN, "finished", {"accepted_videos": 2, "samples": len(samples)})
    return {"build_run": BUILD_RUN, "chem": chem, "newton": newton, "xss": XSS_ID, "samples": samples}


def synthetic(store, run_id: str = "build-synthetic0001", candidates: int = 10_000, samples: int = 5_000,
              points: int = 100) -> str:
    """A build with ``candidates`` candidates (with metadata judgments and LLM calls) over ``points``
    knowledge points and ``samples`` samples of 6 positions each; returns the run id."""
    con = store.con
    cfg = {"agent": {"budgets": {"max_videos": 2000, "max_search_units": 3000}}, "pipeline": {}, "out": "out"}
    store.start_run(run_id, "build", ["build a synthetic textbook"], cfg, "synthetic")
    nodes = [{"node_id": "s1", "parent_id": None, "level": "subject", "name": "Synthetic", "position": 0},
             {"node_id": "s1.c1", "parent_id": "s1", "level": "course", "name": "Course", "position": 1},
             {"node_id": "s1.c1.u1", "parent_id": "s1.c1", "level": "subcourse", "name": "Unit", "position": 2}]
    nodes += [{"node_id": f"s1.c1.u1.p{i}", "parent_id": "s1.c1.u1", "level": "point", "name": f"point number {i}",
               "position": 2 + i} for i in range(1, points + 1)]
    store.save_taxonomy(run_id, nodes)
    statuses = ["accepted", "judged_out", "rejected", "download_failed", "accepted_meta", "transcript_rejected"]
    with store.transaction():
        con.execute(
            "INSERT INTO candidates SELECT ?, 'syn-' || lpad(i::VARCHAR, 6, '0'), "
            f"'s1.c1.u1.p' || (1 + i % {points}), 'local', 'file:///v/' || i, 'query ' || i, 1, "
            "json_object('title', 'synthetic video ' || i, 'description', 'about point ' || (i % 100)), "
            "(?::VARCHAR[])[1 + i % 6], CASE WHEN i % 6 = 0 THEN NULL ELSE 'because' END, NULL, now()::TIMESTAMP "
            "FROM range(?) t(i)", [run_id, statuses, candidates])
        con.execute(
            "INSERT INTO judgments SELECT ?, 'syn-' || lpad(i::VARCHAR, 6, '0'), 'metadata', "
            "CASE WHEN i % 6 = 1 THEN 'reject' ELSE 'accept' END, i % 11, '[\"a reason\"]', NULL, "
            "'syn-call-' || i, now()::TIMESTAMP FROM range(?) t(i)", [run_id, candidates])
        con.execute(
            "INSERT INTO llm_calls SELECT 'syn-call-' || i, ?, 'judge_metadata', 'metadata_judge', "
            "'syn-' || lpad(i::VARCHAR, 6, '0'), 'metadata_judge', 'sha', 'm', 'k' || i, false, '[]', '{}', "
            "100, 20, false, 0.0, 0.1, 1, NULL, now()::TIMESTAMP, NULL FROM range(?) t(i)", [run_id, candidates])
        con.execute(
            "INSERT INTO events (run_id, node, video_id, started_at, ended_at, seconds, input, output, decision, "
            "reasons) SELECT ?, 'judge_metadata', 'syn-' || lpad(i::VARCHAR, 6, '0'), now()::TIMESTAMP, "
            "now()::TIMESTAMP, 0.01, NULL, NULL, 'accept', '[\"ok\"]' FROM range(?) t(i)", [run_id, candidates])
        rows = []
        for i in range(samples):
            vid = f"syn-{i % candidates:06d}"
            meta = {"video_id": vid, "source": "local", "subject": "Synthetic", "clip_start": 0.0, "clip_end": 10.0}
            images = [f"images/{vid}/{vid}@0.0_10.0#{k}.jpg" if k % 2 == 0 else None for k in range(6)]
            texts = [None if k % 2 == 0 else f"paragraph {k} of sample {i}" for k in range(6)]
            s = {"images": images, "texts": texts, "text_ocr_list": texts, "metadata": [meta] * 6, "image_num": 3,
                 "text_num": 3, "token_num": 30}
            rows.append([run_id, i, json.dumps(s), 3, 3, 30])
        con.executemany("INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?)", rows)
    store.finish_run(run_id, "finished", {"accepted_videos": candidates // 6, "samples": samples})
    return run_id
