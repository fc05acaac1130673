"""Corpus statistics from the store: the paper's Table 7 per subject, Table 1 per dataset,
and the drop funnel with reasons (how many videos were lost where, and why)."""

from __future__ import annotations

import json
import re

from pipeline.config import TRAIN_IMAGE_TOKENS, TRAIN_MAX_IMAGES, TRAIN_MAX_LENGTH
from pipeline.figures import hours, sample_tokens, samples_tokens, topics_by_subject
from pipeline.provenance import public_url
from pipeline.tokens import count_tokens_many
from store import Store


def _minmaxavg(values: list[int]) -> dict:
    if not values:
        return {"min": 0, "max": 0, "avg": 0.0}
    return {"min": min(values), "max": max(values), "avg": round(sum(values) / len(values), 2)}


# the run's videos with the run's own status and the config hashes of the outputs it used (a run from
# before migration 008 that recorded none: the video's only output)
_RUN_VIDEOS = (
    "SELECT v.* REPLACE (coalesce(r.status, v.status) AS status, CASE WHEN r.status IS NULL THEN v.reason "
    "ELSE r.reason END AS reason), "
    "coalesce(r.keyframes_hash, (SELECT any_value(config_hash) FROM keyframes k WHERE k.video_id = v.video_id)) "
    "AS keyframes_hash, "
    "coalesce(r.ocr_hash, (SELECT any_value(config_hash) FROM ocr o WHERE o.video_id = v.video_id)) AS ocr_hash, "
    "coalesce(r.clips_hash, (SELECT any_value(config_hash) FROM clips c WHERE c.video_id = v.video_id)) "
    "AS clips_hash, r.asr_hash "
    "FROM videos v JOIN run_videos r USING (video_id) WHERE r.run_id = ? ORDER BY r.position")


def run_videos(store: Store, run_id: str) -> list[dict]:
    """The run's videos (``videos`` rows) with the run's status and reason, and the keyframes, ocr, clips
    and asr hashes of the outputs it used."""
    return store.rows(_RUN_VIDEOS, [run_id])


def corpus_stats(store: Store, run_id: str, tokenizer: str = "whisper") -> dict:
    """Table 7 per subject, Table 1 and the funnels of one run, from the outputs that run used.

    Every figure is pipeline.figures's: Table 7's ``asr_tokens`` / ``ocr_tokens`` are the samples' ASR and
    OCR tokens by the subject of each text position (so a subject's ``asr_tokens`` sum to its samples'
    ``text_num``), ``topics`` its knowledge points, ``hours`` its kept videos' hours (``seconds`` the
    same, unrounded). Table 1's ``tokens_per_sample`` counts text tokens (ASR + OCR, the paper's),
    ``asr_tokens_per_sample`` the ASR part (each sample's ``text_num``), ``ocr_tokens_per_sample`` the rest.

    ``store`` needs only ``rows`` and ``scalar`` (textbook/web reads through a stand-in)."""
    videos = run_videos(store, run_id)
    samples = store.samples(run_id)
    tokens = samples_tokens(samples, tokenizer)
    points = {r["video_id"]: r["point_id"] for r in store.rows(
        "SELECT video_id, point_id FROM candidates WHERE run_id = ?", [run_id])}
    topics = topics_by_subject(videos, points)
    subjects: dict[str, dict] = {}
    kept = [v for v in videos if v["status"] == "kept"]
    for v in kept:
        subj = v["subject"] or "unknown"
        row = subjects.setdefault(subj, {"subject": subj, "videos": 0, "hours": 0.0, "seconds": 0.0,
                                         "topics": topics.get(subj, 0), "clips": 0, "keyframes": 0,
                                         "asr_tokens": 0, "ocr_tokens": 0, "samples": 0})
        row["videos"] += 1
        row["seconds"] += v["duration"] or 0.0
        clips = store.rows("SELECT * FROM clips WHERE video_id = ? AND config_hash = ? ORDER BY idx",
                           [v["video_id"], v["clips_hash"]])
        row["clips"] += len(clips)
        row["keyframes"] += sum(len(json.loads(c["keyframes"] or "[]")) for c in clips if c["decision"] == "keep")
    for s, counted in zip(samples, tokens, strict=True):
        subj = next((m.get("subject") for m in s["metadata"] if isinstance(m, dict) and m.get("subject")),
                    None) or "unknown"
        if subj in subjects:
            subjects[subj]["samples"] += 1
        for p in counted.positions:
            row = subjects.get((p.meta or {}).get("subject") or "unknown")
            if row is not None:
                row["asr_tokens"] += p.asr
                row["ocr_tokens"] += p.ocr
    table7 = []
    for _, row in sorted(subjects.items()):
        row["seconds"] = round(row["seconds"], 3)
        row["hours"] = hours(row["seconds"])
        table7.append(row)
    if table7:
        total = {k: sum(r[k] for r in table7) for k in table7[0] if k not in ("subject", "hours")}
        total["seconds"] = round(total["seconds"], 3)
        table7.append({"subject": "total", **total, "hours": hours(total["seconds"])})
    table1 = {"samples": len(samples),
              "images_per_sample": _minmaxavg([s["image_num"] for s in samples]),
              "tokens_per_sample": _minmaxavg([t.text for t in tokens]),
              "asr_tokens_per_sample": _minmaxavg([t.asr for t in tokens]),
              "ocr_tokens_per_sample": _minmaxavg([t.ocr for t in tokens])}
    out = {"run_id": run_id, "table7": table7, "table1": table1, "trainer_drops": trainer_drops(samples, tokenizer),
           "funnel": funnel(store, run_id, videos)}
    found = search_funnel(store, run_id)
    if found:
        out["search_funnel"] = found
    reviewed = human_reviews(store, run_id)
    if reviewed:
        out["reviews"] = reviewed
    return out


def text_tokens(sample: dict, tokenizer: str = "whisper") -> int:
    """Text tokens of a sample as Table 1 counts them: ASR + OCR (pipeline.figures.SampleTokens.text).
    Not ``token_num``, which also counts the tokens images take."""
    return sample_tokens(sample, tokenizer).text


def trainer_drops(samples: list[dict], tokenizer: str = "whisper", max_images: int = TRAIN_MAX_IMAGES,
                  max_length: int = TRAIN_MAX_LENGTH, image_tokens: int = TRAIN_IMAGE_TOKENS) -> dict:
    """What the training reader (train/data.py ``SampleEncoder``) would leave out of ``samples`` at
    ``--max-images max_images --max-length max_length`` (pipeline.config's TRAIN_* values by default).

    The reader reads ``texts`` (ASR) and each sample as ``BOS body EOS`` within ``max_length`` tokens:
    images past the ``max_images``-th are ignored (their text kept), adjacent texts are joined with one
    space, an image takes ``image_tokens``, and the sequence is cut where the next piece no longer fits
    (the rest of a text, and every later text and image, dropped). Text is counted with ``tokenizer``
    (the trainer's model may count somewhat differently). Returns ``{max_images, max_length,
    image_tokens, samples, samples_cut, images, images_over_cap, images_cut, text_tokens,
    text_tokens_cut}``: samples not read whole, images and text tokens in all and dropped.
    """
    out = {"max_images": max_images, "max_length": max_length, "image_tokens": image_tokens,
           "samples": len(samples), "samples_cut": 0, "images": 0, "images_over_cap": 0, "images_cut": 0,
           "text_tokens": 0, "text_tokens_cut": 0}
    budget = max_length - 2  # BOS and EOS
    for s in samples:
        metas = s.get("metadata") or [None] * len(s["texts"])
        pieces: list[list] = []  # ["image", None] | ["text", str] | ["eov", marker], adjacent texts joined
        shown = 0
        for ref, text, meta in zip(s["images"], s["texts"], metas, strict=False):
            if ref is not None:
                out["images"] += 1
                if shown >= max_images:
                    out["images_over_cap"] += 1
                else:
                    shown += 1
                    pieces.append(["image", None])
            if text is None:
                continue
            if isinstance(meta, dict) and meta.get("type") == "eov":
                pieces.append(["eov", text])
            elif text.strip():
                if pieces and pieces[-1][0] == "text":
                    pieces[-1][1] = f"{pieces[-1][1]} {text}"
                else:
                    pieces.append(["text", text])
        costs = count_tokens_many([text if kind != "image" else "" for kind, text in pieces], tokenizer)
        used, cut = 0, False
        for (kind, _), n in zip(pieces, costs, strict=True):
            n = image_tokens if kind == "image" else n
            if kind == "text":
                out["text_tokens"] += n
            if not cut and used + n <= budget:
                used += n
                continue
            if kind == "image":  # the reader skips an image that does not fit whole, then stops
                out["images_cut"] += 1
            elif kind == "text":  # a text is cut where the budget ends
                out["text_tokens_cut"] += n if cut else n - (budget - used)
            cut = True
        if cut or shown < sum(ref is not None for ref in s["images"]):
            out["samples_cut"] += 1
    return out


def sources(store: Store, run_id: str) -> list[dict]:
    """The run's kept videos as a dataset card lists them: id, public source, title, license (None: unknown).

    The license is the video's metadata's (a sidecar's or yt-dlp's ``license``), else the one its search
    result reported (the agent's candidates, e.g. YouTube's ``youtube`` / ``creativeCommon``).
    """
    rows = store.rows("SELECT v.video_id, v.public_source, v.source, v.title, v.metadata FROM videos v "
                      "JOIN run_videos r USING (video_id) WHERE r.run_id = ? AND coalesce(r.status, v.status) = 'kept' "
                      "ORDER BY r.position", [run_id])
    found = {r["video_id"]: r["metadata"] for r in
             store.rows("SELECT video_id, metadata FROM candidates WHERE run_id = ?", [run_id])}
    out = []
    for r in rows:
        meta = json.loads(r["metadata"] or "{}")
        lic = meta.get("license") or json.loads(found.get(r["video_id"]) or "{}").get("license")
        src = r["public_source"] or public_url(r["source"]) or re.split(r"[\\/]", str(r["source"]))[-1]
        out.append({"video_id": r["video_id"], "source": src, "title": r["title"],
                    "license": str(lic) if lic else None})
    return out


def human_reviews(store: Store, run_id: str) -> list[dict]:
    """Decisions a human took in review (agents/review.py), per stage and verdict, with how many
    overrode the model's verdict."""
    return store.rows("SELECT kind, verdict, count(*) AS n, count(*) FILTER (WHERE json_extract_string(detail, "
                      "'$.model_verdict') <> verdict) AS overrides FROM judgments WHERE run_id = ? "
                      "AND kind LIKE 'human:%' GROUP BY ALL ORDER BY kind, verdict", [run_id])


def search_funnel(store: Store, run_id: str) -> dict | None:
    """For a build: found -> metadata accepted -> downloaded -> transcribed -> kept, with the losses.
    "metadata accepted" counts the judge's accepts; videos an advisory judge rejected but did not drop
    are counted apart ("advisory: kept though rejected")."""
    rows = store.rows("SELECT status, reason, video_id FROM candidates WHERE run_id = ?", [run_id])
    if not rows:
        return None
    verdicts = {r["video_id"]: r["verdict"] for r in store.rows(
        "SELECT video_id, verdict FROM judgments WHERE run_id = ? AND kind = 'metadata'", [run_id])}
    past_meta = {"accepted_meta", "download_failed", "downloaded", "rejected", "transcribed", "transcript_rejected",
                 "judged", "visuals", "accepted"}
    past_download = past_meta - {"accepted_meta", "download_failed"}
    past_asr = {"transcribed", "transcript_rejected", "judged", "visuals", "accepted"}
    passed = [r for r in rows if r["status"] in past_meta]
    steps = [("found", len(rows)),
             ("metadata accepted", sum(verdicts.get(r["video_id"]) != "reject" for r in passed)),
             ("downloaded", sum(r["status"] in past_download for r in rows)),
             ("transcribed", sum(r["status"] in past_asr for r in rows)),
             ("accepted", sum(r["status"] == "accepted" for r in rows))]
    lost: dict[str, int] = {}
    for r in rows:
        if r["status"] in ("judged_out", "transcript_rejected"):
            key = r["status"]
        elif r["status"] in ("download_failed", "rejected"):
            key = f"{r['status']}:{r['reason']}"
        elif r["status"] == "error":  # a fault, not a judgment: NODE: KIND (the same command retries it)
            key = f"failed:{r['reason']}"
        else:
            continue
        lost[key] = lost.get(key, 0) + 1
    out = {"steps": [{"step": s, "videos": n} for s, n in steps], "lost": dict(sorted(lost.items()))}
    advisory = sum(verdicts.get(r["video_id"]) == "reject" for r in passed)
    if advisory:
        out["advisory_kept"] = advisory
    return out


def funnel(store: Store, run_id: str, videos: list[dict]) -> dict:
    """found -> probed -> passed rules -> transcribed -> kept, with drop reasons, error kinds and the
    kinds of warnings the run's videos carry (truncated: videos whose file ends before its header's
    duration; their hours count what decodes)."""
    ids = [v["video_id"] for v in videos]
    probed = store.scalar("SELECT count(DISTINCT s.video_id) FROM stage_status s JOIN run_videos r USING (video_id) "
                          "WHERE r.run_id = ? AND s.stage = 'probe' AND s.status = 'done'", [run_id])
    done = {"probe": int(probed or 0)}
    for stage in ("asr", "keyframes", "ocr"):
        done[stage] = sum(1 for v in videos if v[f"{stage}_hash"] and store.scalar(
            "SELECT count(*) FROM stage_status WHERE video_id = ? AND stage = ? AND config_hash = ? AND "
            "status = 'done'", [v["video_id"], stage, v[f"{stage}_hash"]]))
    dropped: dict[str, int] = {}
    errors: dict[str, int] = {}
    for v in videos:
        if v["status"] in ("rejected", "duplicate"):  # a duplicate's reason is "duplicate"
            dropped[v["reason"]] = dropped.get(v["reason"], 0) + 1
        elif v["status"] == "error":
            errors[v["reason"]] = errors.get(v["reason"], 0) + 1
    steps = [("found", len(ids)), ("probed", done["probe"]), ("transcribed", done["asr"]),
             ("keyframes", done["keyframes"]), ("ocr", done["ocr"]),
             ("kept", sum(1 for v in videos if v["status"] == "kept"))]
    ocr_drops = store.rows(f"SELECT o.drop_reason AS reason, count(*) AS n FROM ({_RUN_VIDEOS}) r JOIN ocr o "
                           "ON o.video_id = r.video_id AND o.config_hash = r.ocr_hash WHERE o.kept = false "
                           "GROUP BY 1 ORDER BY 1", [run_id])
    clip_decisions = store.rows(f"SELECT c.decision, count(*) AS n FROM ({_RUN_VIDEOS}) r JOIN clips c "
                                "ON c.video_id = r.video_id AND c.config_hash = r.clips_hash GROUP BY 1 ORDER BY 1",
                                [run_id])
    warned = store.rows("SELECT w.kind, count(DISTINCT w.video_id) AS n FROM warnings w JOIN run_videos r "
                        "USING (video_id) WHERE r.run_id = ? GROUP BY 1 ORDER BY 1", [run_id]) if store.scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'warnings'") else []  # read-only, pre-015
    out = {"steps": [{"step": s, "videos": n} for s, n in steps],
           "dropped": dict(sorted(dropped.items())), "errors": dict(sorted(errors.items())),
           "warnings": {r["kind"]: r["n"] for r in warned},
           "ocr_dropped": {r["reason"]: r["n"] for r in ocr_drops},
           "clip_decisions": {r["decision"]: r["n"] for r in clip_decisions}}
    checks = store.rows(f"SELECT c.rewrite FROM ({_RUN_VIDEOS}) r JOIN clips c ON c.video_id = r.video_id "
                        "AND c.config_hash = r.clips_hash WHERE c.rewrite IS NOT NULL", [run_id])
    if checks:
        out["rewrites"] = rewrite_counts(json.loads(r["rewrite"]) for r in checks)
    return out


def rewrite_counts(checks) -> dict:
    """The clip rewrites' funnel from their records (``clips.rewrite`` dicts, agents.rewrite.Rewrite.record):
    accepted, refused, ``no_answer`` (the model gave none that validated), refusals by kind (a rewrite may fail
    several), ``advisory``: accepted rewrites not used (the embedded model's, not measured to beat the raw
    ASR), ``kept``: which text the corpus has (rewrite, slide_fixed: the raw paragraph with its slide fixes,
    raw), ``term_fixes``: the slide-term fixes in the kept texts, and ``reverted``: the swaps put back. A
    record from before ``kept`` was stored counts as kept raw unless accepted and used."""
    out = {"accepted": 0, "refused": 0, "no_answer": 0, "refused_by": {}, "term_fixes": 0, "reverted": 0,
           "advisory": 0, "kept": {"rewrite": 0, "slide_fixed": 0, "raw": 0}}
    for c in checks:
        status = c.get("status")
        out[status if status in ("refused", "no_answer") else "accepted"] += 1
        out["advisory"] += bool(c.get("advisory")) and status == "accepted"
        for kind in c.get("kinds") or []:
            out["refused_by"][kind] = out["refused_by"].get(kind, 0) + 1
        kept = c.get("kept") or ("rewrite" if status == "accepted" and not c.get("advisory") else "raw")
        out["kept"][kept] = out["kept"].get(kept, 0) + 1
        out["term_fixes"] += len((c.get("corrections") if kept == "rewrite" else
                                  c.get("slide_fixes") if kept == "slide_fixed" else None) or [])
        out["reverted"] += len(c.get("reverted") or [])
    out["refused_by"] = dict(sorted(out["refused_by"].items()))
    return out
