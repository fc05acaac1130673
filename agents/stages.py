"""The build's stages: the judges and the download around the pipeline's stages, on the same contract
(pipeline.stage) and through the same scheduler (pipeline.flow.Flow).

    judge_metadata                                   (all candidates, before slots are given: agents/slots.py)
    download -> probe -> asr -> judge_transcripts -> keyframes -> ocr -> clips (rewrite + clip judge)

``build_stages`` gives the list after the metadata judge; each stage's ``passed`` is the candidate's
status once it has passed it (where a video stands in a run), and ``BuildLedger`` records it. The LLM
stages call the gateway (its response cache makes a rerun free) and need no lane: the gateway bounds the
requests in flight per endpoint. A judge's rejection is a Drop with the judge's status and reasons; a
call that kept failing raises, and the ledger records a failure with its kind (never a judgment).
"""

from __future__ import annotations

import hashlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from agents import rewrite, schemas, visual_filter
from agents.config import AgentConfig
from agents.deps import Deps
from agents.llm import LLMOutputInvalid
from agents.review import borderline
from pipeline.assemble import clip_ocr
from pipeline.records import Clip, Status, Video
from pipeline.stage import Context, Drop, Needs, Stage
from pipeline.stages import AsrStage, ClipsStage, KeyframesStage, OcrStage, ProbeStage
from tools import storage
from tools.errors import failure_kind, failure_message

log = logging.getLogger(__name__)


# -- the judges' policy ------------------------------------------------------------------------------------
def fail_if_policy(cfg: AgentConfig, exc: LLMOutputInvalid) -> None:
    """Re-raise a call's failure when the item must fail rather than take the policy default: a request
    that kept failing through the re-sends (kinds timeout, rate_limited, server_error, bad_request), or
    an answer that never validated under ``on_invalid: fail``. The policy default (accept or reject)
    is for a model that answered but never validly (kind invalid_output)."""
    if exc.kind != "invalid_output" or cfg.on_invalid == "fail":
        raise exc


def failure_reason(exc: LLMOutputInvalid) -> str:
    """Why a call gave no usable answer, for a policy reason: its kind (timeout, rate_limited, server_error,
    bad_request) or no valid answer."""
    return f"no valid answer: {exc}" if exc.kind == "invalid_output" else f"{exc.kind}: {exc}"


def shown(verdict: str, kept: bool, policy: bool) -> str:
    """A judge's decision as the trace shows it: policy defaults and advisory verdicts say so."""
    text = verdict + (" (policy)" if policy else "")
    if kept and verdict == "reject":
        text += " (advisory: kept)"
    return text


def model_reasons(reasons: list[str], policy: bool) -> list[str]:
    """The model's own reasons, quoted so a reason such as "error" is not read as a system error."""
    return list(reasons) if policy else [f"model: {json.dumps(r, ensure_ascii=False)}" for r in reasons]


def metadata_judge_values(chain: list[str], spec: dict, m: dict, comments: int) -> dict:
    """The metadata judge prompt's values for a video's metadata ``m`` (a Candidate dict) and a point's path."""
    return {"point": chain[-1], "path": " > ".join(chain), "level": spec["level"], "language": spec["language"],
            "duration": f"{m['duration_s']:.0f} s" if m.get("duration_s") else "unknown",
            "views": m.get("view_count") if m.get("view_count") is not None else "unknown",
            "likes": m.get("like_count") if m.get("like_count") is not None else "unknown",
            "license": m.get("license") or "unknown", "title": m.get("title") or "",
            "description": (m.get("description") or "")[:2000], "tags": ", ".join(m.get("tags") or []),
            "channel": m.get("channel") or "",
            "comments": "\n".join(f"- {x[:300]}" for x in (m.get("comments") or [])[:comments])}


def transcript_judge_values(chain: list[str], text: str, max_chars: int) -> dict:
    """The transcript judge prompt's values: the point's path and the transcript's first ``max_chars``."""
    return {"point": chain[-1], "path": " > ".join(chain), "chars": min(len(text), max_chars),
            "total_chars": len(text), "transcript": text[:max_chars]}


# -- a candidate as a flow item ----------------------------------------------------------------------------
def candidate_video(c: dict) -> Video:
    """A build candidate (a ``candidates`` row) as the flow's Video: ``source`` its downloaded file once
    fetched, else its URL; ``metadata`` what the search found (untrusted)."""
    return Video(video_id=c["video_id"], source=c["path"] or c["url"], url=c["url"], point_id=c["point_id"],
                 title=(c["metadata"] or {}).get("title"), metadata=c["metadata"] or {})


def at_once(calls: ThreadPoolExecutor | None, fn, items: list) -> list:
    """``fn`` over ``items`` on the ``calls`` pool (one video's LLM requests asked at once), in order."""
    return list(calls.map(fn, items)) if calls is not None and len(items) > 1 else [fn(x) for x in items]


class BuildStage(Stage):
    """A stage of the build only: the pipeline's context plus the build's dependencies; ``spec``: the goal's
    spec (level, language); ``calls``: the pool on which one video's LLM requests are asked at once."""

    def __init__(self, ctx: Context, deps: Deps, spec: dict | None = None, calls: ThreadPoolExecutor | None = None):
        super().__init__(ctx)
        self.d, self.spec, self.calls = deps, spec or {}, calls

    @property
    def run_id(self) -> str:
        """The build's run id."""
        return self.d.run_id


class MetadataJudgeStage(BuildStage):
    """The metadata judge (paper section 3.2): accept or reject a candidate from its title, description,
    tags, comments and numbers, for its knowledge point. A score under ``agent.min_metadata_score`` is a
    rejection; one in the review band waits for a human (agents/review.py)."""

    name = "judge_metadata"
    passed = Status.METADATA_ACCEPTED

    def step(self, video: Video) -> Video | Drop:
        """Judge one candidate; the video (accepted, or kept as advisory) or a Drop (rejected, review)."""
        d, cfg, vid = self.d, self.d.cfg, video.video_id
        enforce = d.enforce["metadata"]
        chain = d.path(self.run_id, video.point_id)[1]
        values = metadata_judge_values(chain, self.spec, video.metadata, cfg.comments)
        verdict, score, reasons, call_id, policy = self._ask(values, vid)
        d.store.save_judgment(self.run_id, vid, "metadata", verdict, score, reasons,
                              {"point_id": video.point_id, "source": "policy" if policy else "model",
                               "enforced": enforce}, call_id)
        d.store.set_hit_verdict(self.run_id, vid, video.point_id, verdict, score)
        queued = borderline(d, self.run_id, vid, "metadata", verdict, score)
        if queued is not None:
            return queued
        keep = verdict == "accept" or not enforce
        d.decision(self.name, vid, shown(verdict, keep, policy), model_reasons(reasons, policy),
                   {"score": score, "point_id": video.point_id})
        why = "; ".join(reasons)[:500]
        return video if keep else Drop(Status.METADATA_REJECTED, why, traced=True)

    def _ask(self, values: dict, vid: str) -> tuple:
        cfg = self.d.cfg
        try:
            ans = self.d.gateway.call("metadata_judge", self.name, "metadata_judge", values,
                                      schemas.MetadataVerdict, video_id=vid)
        except LLMOutputInvalid as exc:
            fail_if_policy(cfg, exc)
            return cfg.on_invalid, None, [f"{cfg.on_invalid} by policy: {failure_reason(exc)}"], exc.call_id, True
        v: schemas.MetadataVerdict = ans.value
        verdict, reasons = v.verdict, v.reasons
        if verdict == "accept" and v.score < cfg.min_metadata_score:
            verdict, reasons = "reject", [*reasons, f"score {v.score} < {cfg.min_metadata_score}"]
        return verdict, v.score, reasons, ans.call_id, False


class DownloadStage(BuildStage):
    """Fetch a metadata-accepted video (tools.download) and register it as a video of the run (its
    metadata under the taxonomy's names). A video that cannot be had (private, removed, geo, age, a
    missing or corrupt file, ...) is ``download_failed``; a transient fault that outlived the re-tries
    (tools.download.TRANSIENT_KINDS: network, timeout, http-5xx, rate-limit) is raised: a failure, which
    the next run of the command retries.

    The download is a task (``task``: tools.download.download_task into the media root's ``downloads``,
    by URI): with ``--executor ray`` an actor of the ``download`` pool runs it on whichever node the pool
    is placed (pipeline/pools.py), in the ``download`` lane, which the flow bounds by what that pool takes
    at once; the driver registers the video from the task's record (its URI, sha256, size) and never reads
    the file. Other executors run it in the flow's thread, as before."""

    name = "download"
    passed = Status.DOWNLOADED
    needs = Needs(lane="download", cpus=0.0)

    def task(self, video: Video, h: str = ""):
        """(tools.download.download_task, its arguments) for ``video``'s URL into ``media/downloads``."""
        from tools.download import download_task

        cfg = self.d.cfg
        return download_task, (video.url, str(self.d.downloads), video.video_id, cfg.download_max_height,
                               cfg.download_retries)

    def step(self, video: Video) -> Video | Drop:
        """Download and register; the video with ``source`` its file or object, or a Drop (download_failed)."""
        from tools.download import TRANSIENT_KINDS, DownloadError

        d, vid = self.d, video.video_id
        on_ray = self.cfg.executor == "ray"
        content, had = None, video.source != video.url  # had: a file an earlier run fetched
        if on_ray or not had or not Path(video.source).is_file():
            fn, args = self.task(video)
            try:
                got = self.ctx.executor().submit(self.name, fn, args).result() if on_ray else fn(*args)
            except DownloadError as exc:
                if exc.kind in TRANSIENT_KINDS:
                    raise
                d.store.record_error(vid, self.name, "", exc.kind, exc.message, self.run_id)
                d.decision(self.name, vid, "failed", [f"{exc.kind}: {exc.message}"])
                return Drop(Status.DOWNLOAD_FAILED, exc.kind, exc.message, traced=True)
            content = (got.sha256, got.bytes)
            if not had or got.source != video.source or got.attempts:
                d.store.update_candidate(self.run_id, vid, path=got.source)
                d.decision(self.name, vid, "downloaded", [got.source.replace("\\", "/").rsplit("/", 1)[-1]])
                video = replace(video, source=got.source)
        source = video.source if storage.is_remote(video.source) else Path(video.source)
        d.runner.register(self.run_id, [(source, self.registered(video))], content=content)
        return video

    def registered(self, video: Video) -> dict:
        """The metadata a downloaded candidate is registered with: the taxonomy's names for its point."""
        point, chain = self.d.path(self.run_id, video.point_id)
        return {"id": video.video_id, "title": video.metadata.get("title"), "subject": chain[0],
                "course": chain[1] if len(chain) > 1 else None,
                "subcourse": chain[2] if len(chain) > 3 else None, "knowledge_point": point,
                "difficulty": self.d.taxonomy(self.run_id)[video.point_id].get("difficulty"),
                "point_id": video.point_id, "url": video.url}


class TranscriptJudgeStage(BuildStage):
    """Two transcript judges, asked at once (paper section 3.3); a video is dropped only when both
    reject it (docs/method.md section 2). With one model for both (the embedded server) judge b repeats
    judge a's verdict instead of paying for the same answer again."""

    name = "judge_transcripts"
    passed = Status.TRANSCRIPT_ACCEPTED

    def step(self, video: Video) -> Video | Drop:
        """Judge one transcribed video; the video (kept) or a Drop (both rejected, review)."""
        d, vid = self.d, video.video_id
        enforce = d.enforce["transcript"]
        tr = d.runner.transcript(vid)  # the transcript of this run's ASR config
        text = tr["text"] or " ".join(s["text"] for s in tr["segments"])
        values = transcript_judge_values(d.path(self.run_id, video.point_id)[1], text, d.cfg.transcript_chars)
        twin = d.gateway.same_model("transcript_judge_a", "transcript_judge_b")
        roles = ["transcript_judge_a"] + ([] if twin else ["transcript_judge_b"])
        answers = at_once(self.calls, lambda role: self._ask(role, values, vid), roles)
        if twin:
            verdict, score, reasons, detail, call_id, _ = answers[0]
            answers.append((verdict, score, reasons, detail, call_id, "same model as judge a"))
        verdicts, scores, said = self._record(vid, answers, enforce)
        both = verdicts.count("reject") == 2
        mean = sum(scores) / 2 if None not in scores else None
        queued = borderline(d, self.run_id, vid, "transcript", "reject" if both else "accept", mean)
        if queued is not None:
            return queued
        if both and enforce:
            d.store.update_run_video(self.run_id, vid, status=Status.TRANSCRIPT_REJECTED, reason="transcript_judges")
            d.decision(self.name, vid, "reject", [f"both judges rejected ({'; '.join(said)})"])
            return Drop(Status.TRANSCRIPT_REJECTED, "both transcript judges", traced=True)
        d.decision(self.name, vid, "keep (advisory: both rejected)" if both else "keep", [f"judges {'; '.join(said)}"])
        return video

    def _ask(self, role: str, values: dict, vid: str) -> tuple:
        cfg = self.d.cfg
        try:
            ans = self.d.gateway.call(role, self.name, "transcript_judge", values, schemas.TranscriptVerdict,
                                      video_id=vid)
        except LLMOutputInvalid as exc:
            fail_if_policy(cfg, exc)
            why = [f"{cfg.on_invalid} by policy: {failure_reason(exc)}"]
            return cfg.on_invalid, None, why, None, exc.call_id, "policy"
        v = ans.value
        return (v.verdict, round((v.relevance + v.density + v.quality) / 3, 2), v.reasons,
                {"relevance": v.relevance, "density": v.density, "quality": v.quality}, ans.call_id, "model")

    def _record(self, vid: str, answers: list[tuple], enforce: bool) -> tuple[list, list, list]:
        verdicts, scores, said = [], [], []
        for kind, (verdict, score, reasons, detail, call_id, source) in zip(("transcript_a", "transcript_b"),
                                                                             answers, strict=False):
            self.d.store.save_judgment(self.run_id, vid, kind, verdict, score, reasons,
                                       {**(detail or {}), "source": source, "enforced": enforce}, call_id)
            verdicts.append(verdict)
            scores.append(score)
            if source == "same model as judge a":
                said.append(f"b: same model as a ({verdict})")
            else:
                said.append(f"{kind[-1]}: {verdict}" + (" (policy)" if source == "policy" else f" {score}"))
        return verdicts, scores, said


class JudgedClipsStage(ClipsStage):
    """The pipeline's clips, decided by the build: each paragraph's grounded rewrite (agents/rewrite.py,
    checked for faithfulness), the clip judge (``agent.clip_judge``: rules, or the LLM on the ASR-OCR
    similarity, the keyframes and the OCR density; paper section 3.4) and, when on, the visual filter
    (agents/visual_filter.py: a clip the judge keeps loses its frames when their caption does not match its
    speech). A video's clips are decided at once on ``calls``; its clips hash covers this policy
    (``policy_hash``)."""

    passed = Status.ACCEPTED

    def __init__(self, ctx: Context, deps: Deps, spec: dict | None = None, calls: ThreadPoolExecutor | None = None):
        self.d, self.spec, self.calls = deps, spec or {}, calls
        super().__init__(ctx)

    @property
    def run_id(self) -> str:
        """The build's run id."""
        return self.d.run_id

    def policy_hash(self) -> str:
        """The rewrite's policy, the clip judge, its threshold and prompt, the enforcement, the models and
        (when on) the visual filter's settings and prompt."""
        import prompts

        cfg = self.d.cfg
        parts = [*rewrite.policy(cfg, self.d.rewrite_use), cfg.clip_judge, cfg.clip_min_similarity,
                 self.d.enforce["clip"], prompts.load("clip_judge").sha256,
                 self.d.gateway.cfg.model_dump(mode="json")]
        parts += visual_filter.policy(cfg)  # [] when off: the hash stays what it was before the filter
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def judge(self, video: Video, clips: list[Clip], frames: dict[int, dict]) -> list[Clip]:
        """Rewrite and judge every clip of the video at once (each clip's rewrite before its judgment)."""
        point = self.d.path(self.run_id, video.point_id)[0] if video.point_id else ""
        done = [0]

        def one(c: Clip) -> Clip:
            self._rewrite(point, video.video_id, c, frames)
            self._decide(point, video.video_id, c, frames)
            done[0] += 1
            self.d.progress("clips", done[0], len(clips), video.video_id)
            return c

        return at_once(self.calls, one, clips)

    def _rewrite(self, point: str, vid: str, c: Clip, frames: dict[int, dict]) -> None:
        """The clip's rewrite (agents.rewrite.polish) into ``c.polished`` (the text kept: the checked rewrite,
        or, refused, unanswered or advisory, the raw paragraph with its slide fixes; None: the raw text) and
        ``c.rewrite`` (the record, with ``kept``). A refusal or a missing answer is a ``polish`` decision saying
        what was kept."""
        cfg = self.d.cfg
        if not (cfg.polish and c.text.strip()):
            return
        slide = rewrite.slide_text_near(frames, c.keyframes, c.start_s, c.end_s)
        req = rewrite.RewriteRequest(point, c.text, slide, vid)
        try:
            done = rewrite.polish(self.d.gateway, req, rewrite.limits(cfg), grounded=cfg.polish_terms,
                                  use=self.d.rewrite_use)
        except LLMOutputInvalid as exc:
            fail_if_policy(cfg, exc)
            done = rewrite.unanswered(req, failure_reason(exc), exc.call_id or None, grounded=cfg.polish_terms)
            self.d.decision("polish", vid, "raw" if done.kept == rewrite.KEPT_RAW else "slide fixes",
                            [f"clip {c.idx}: kept {done.why_kept()} ({done.failure})"])
        else:
            if done.check.refused:
                self.d.decision("polish", vid, "refused", [f"clip {c.idx}: {'; '.join(done.check.reasons)}; "
                                                           f"kept {done.why_kept()}"])
        c.polished, c.rewrite = done.polished, done.record()

    def _decide(self, point: str, vid: str, c: Clip, frames: dict[int, dict]) -> None:
        cfg = self.d.cfg
        kfs = [frames[i] for i in c.keyframes]
        ocr = clip_ocr(kfs)
        sim = round(float(self.d.embedder().similarity(c.text, ocr)), 4) if ocr and c.text else 0.0
        c.signals = {"asr_ocr_similarity": sim, "keyframes": len(kfs),
                     "ocr_chars_per_keyframe": round(len(ocr) / len(kfs), 1) if kfs else 0.0}
        call_id = None
        if not kfs:
            decision, reasons = "drop_frames", ["no keyframes in the clip"]
        else:
            rule = "drop_frames" if sim < cfg.clip_min_similarity and len(ocr) < 20 else "keep"
            decision, reasons = rule, [f"rules: similarity {sim:.2f}, {len(ocr)} OCR chars"]
            if cfg.clip_judge == "llm":
                decision, reasons, call_id = self._ask(point, vid, c, ocr, decision, reasons)
            if decision == "keep" and cfg.caption_filter_on():
                decision, reasons = self._filter(vid, c, kfs, reasons)
                call_id = call_id or c.signals.get("caption_call_id")
        c.decision, c.reason = decision, "; ".join(reasons)[:500]
        self.d.store.save_judgment(self.run_id, vid, f"clip:{c.idx}", decision, sim, reasons, c.signals, call_id)

    def _filter(self, vid: str, c: Clip, kfs: list[dict], reasons: list[str]) -> tuple[str, list[str]]:
        """The visual filter on a clip whose frames are kept so far: keep, or drop_frames when the caption's
        similarity to the ASR paragraph is under ``agent.caption_min_similarity`` (advisory under
        ``enforce_judges = no``). A failed caption call raises (fail_if_policy), or takes the policy."""
        cfg = self.d.cfg
        if not c.text.strip():
            return "keep", [*reasons, "visual filter: no speech to compare the frames with"]
        try:
            cap = visual_filter.caption_clip(self.d.gateway, kfs, cfg.caption_max_images, vid)
        except LLMOutputInvalid as exc:
            fail_if_policy(cfg, exc)
            keep = cfg.on_invalid == "accept"
            return "keep" if keep else "drop_frames", \
                [*reasons, f"visual filter: {cfg.on_invalid} by policy ({failure_reason(exc)})"]
        sim = round(float(self.d.embedder().similarity(cap.text, c.text)), 4)
        c.signals |= {"caption_asr_similarity": sim, "captioned_keyframes": cap.images, "caption_call_id": cap.call_id}
        low, bar = sim < cfg.caption_min_similarity, cfg.caption_min_similarity
        if not low:
            return "keep", [*reasons, f"visual filter: caption-ASR similarity {sim:.2f} >= {bar:.2f}"]
        why = f"visual filter: caption-ASR similarity {sim:.2f} < {bar:.2f} (the frames do not show what is said)"
        if not visual_filter.enforced(cfg):
            return "keep", [*reasons, f"{why} (advisory: kept)"]
        return "drop_frames", [*reasons, why]

    def _ask(self, point: str, vid: str, c: Clip, ocr: str, decision: str, reasons: list[str]) -> tuple:
        values = {"point": point, "keyframes": c.signals["keyframes"],
                  "ocr_density": c.signals["ocr_chars_per_keyframe"],
                  "similarity": f"{c.signals['asr_ocr_similarity']:.2f}", "paragraph": c.text, "ocr": ocr or "(none)"}
        try:
            ans = self.d.gateway.call("clip_judge", "clips", "clip_judge", values, schemas.ClipDecision, video_id=vid)
        except LLMOutputInvalid as exc:
            fail_if_policy(self.d.cfg, exc)
            return decision, [*reasons, f"rules decided: the clip judge gave no answer ({failure_reason(exc)})"], None
        if self.d.enforce["clip"]:
            return ans.value.decision, ans.value.reasons, ans.call_id
        return decision, [*reasons, f"advisory judge said {ans.value.decision}: {'; '.join(ans.value.reasons)}"], \
            ans.call_id

    def keep(self, video: Video, h: str) -> str | None:
        """As the pipeline's (``no_clips``, else kept), and the trace says so."""
        reason = super().keep(video, h)
        if reason is None:
            self.d.decision("clips", video.video_id, "accepted", ["clips kept"])
        return reason


def build_stages(ctx: Context, deps: Deps, spec: dict, calls: ThreadPoolExecutor | None) -> list[Stage]:
    """The build's per-video stages after the metadata judge, in flow order:
    download -> probe -> asr -> judge_transcripts -> keyframes -> ocr -> clips."""
    return [DownloadStage(ctx, deps, spec, calls), ProbeStage(ctx), AsrStage(ctx),
            TranscriptJudgeStage(ctx, deps, spec, calls), KeyframesStage(ctx), OcrStage(ctx),
            JudgedClipsStage(ctx, deps, spec, calls)]


class BuildLedger:
    """Where a build's video stands: the candidate's status is the ``passed`` status of the last stage it
    passed, or its drop's (a rule's rejection: ``rejected`` with the rule's reason; a failure: ``error``
    with reason ``STAGE: KIND``, which the next run retries: agents/slots.retry_failed). Pipeline stages'
    passes and drops get a decision in the trace here; the judges trace their own."""

    def __init__(self, deps: Deps):
        self.d = deps

    def passed(self, video: Video, stage: Stage) -> None:
        """The candidate's status is the stage's ``passed``."""
        if stage.passed is not None:
            self.d.store.update_candidate(self.d.run_id, video.video_id, status=stage.passed,
                                          **({"reason": None} if stage.passed == Status.ACCEPTED else {}))
        if stage.name == "asr":
            tr = self.d.runner.transcript(video.video_id) or {}
            self.d.decision("asr", video.video_id, "transcribed",
                            [f"{len(tr.get('segments') or [])} ASR segments, language {tr.get('language')}"])
        elif stage.name == "ocr":
            self.d.decision("ocr", video.video_id, "done", [f"{len(self.d.store.keyframes(video.video_id))} keyframes"])

    def dropped(self, video: Video, stage: Stage, drop: Drop) -> None:
        """The candidate's status and reason from the drop; a trace event unless the stage wrote one."""
        d, vid = self.d, video.video_id
        if drop.failed:
            self._failure(vid, stage.name, drop.reason, drop.message, record=False, traced=drop.traced)
            return
        status = Status.REJECTED if drop.status in (Status.REJECTED, Status.DUPLICATE) else drop.status
        d.store.update_candidate(d.run_id, vid, status=status, reason=drop.reason)
        if not drop.traced:
            d.decision(stage.name, vid, "rejected", [drop.reason])

    def failed(self, video: Video, stage: Stage, exc: Exception) -> Drop:
        """An exception that escaped ``stage``: the candidate fails with its kind (an errors row, a trace event)."""
        kind, message = failure_kind(exc), failure_message(exc, 300)
        self._failure(video.video_id, stage.name, kind, message, record=True, traced=False)
        return Drop(Status.ERROR, kind, message, traced=True)

    def _failure(self, vid: str, node: str, kind: str, message: str, record: bool, traced: bool) -> None:
        d = self.d
        d.store.update_candidate(d.run_id, vid, status=Status.ERROR, reason=f"{node}: {kind}")
        if record:
            d.store.record_error(vid, node, "", kind, message, d.run_id)
        if not traced:
            d.decision(node, vid, "failed", [f"{kind}: {message}"])
            d.on_event({"event": "item_failed", "node": node, "video_id": vid, "kind": kind, "message": message})
