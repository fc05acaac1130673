"""Configuration of the agent: one pydantic model, overridable by flags, environment and file.

    TEXTBOOK_AGENT__LLM__BASE_URL=http://127.0.0.1:8000/v1 TEXTBOOK_AGENT__LLM__MODEL=qwen2.5-7b textbook build ...
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ROLES = ("planner", "metadata_judge", "transcript_judge_a", "transcript_judge_b", "polisher", "clip_judge",
         "captioner")
"""The gateway's roles. ``captioner`` is the vision model of the visual clip filter (``AgentConfig.visual_filter``):
it has no default model, since the text model cannot see a keyframe."""


class RoleConfig(BaseModel):
    """Overrides for one role: a different model or endpoint (the paper used two judge models)."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    concurrency: int | None = Field(None, ge=1, description="requests in flight at this role's endpoint (its "
                                    "base_url); roles sharing an endpoint share its slots, the smallest limit wins")


class LLMConfig(BaseModel):
    """The OpenAI-compatible endpoint(s) the gateway talks to. No base_url: the embedded local server."""

    model_config = ConfigDict(extra="forbid")
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint; none starts the embedded llama.cpp")
    model: str = Field("qwen2.5-coder-1.5b-instruct", description="model name sent to the endpoint (the embedded "
                       "server answers to its own model's name)")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the key (never stored)")
    temperature: float = 0.0
    max_tokens: int = Field(512, description="cap on one answer")
    timeout_s: float = Field(120.0, gt=0, description="hard limit on one request, in seconds: a call still running "
                                                      "then is cut and recorded as a failed call (kind timeout)")
    retries: int = Field(2, ge=0, description="re-asks after an answer fails validation")
    http_retries: int = Field(3, ge=0, description="re-sends after a timeout, a 429, a 5xx or a connection error, "
                              "with exponential backoff that honours Retry-After (0 for the embedded server)")
    backoff_s: float = Field(0.5, gt=0, description="first wait before a re-send, in seconds; doubles each time, "
                             "with jitter")
    backoff_max_s: float = Field(20.0, gt=0, description="longest wait between re-sends, in seconds")
    retry_after_max_s: float = Field(60.0, ge=0, description="a server's Retry-After is honoured up to this many "
                                     "seconds (longer: backoff_max_s)")
    concurrency: int = Field(16, ge=1, description="requests in flight at once per endpoint (base_url; the embedded "
                             "server is one endpoint); cache hits take no slot")
    down_after: int = Field(8, ge=1, description="this many calls in a row that cannot connect to an endpoint, each "
                            "after its re-sends, mean the endpoint is down: LLMUnavailable stops the build")
    preflight_timeout_s: float = Field(5.0, gt=0, description="how long Gateway.preflight waits for each endpoint's "
                                       "GET /models, in seconds")
    price_in_per_mtok: float = Field(0.0, description="USD per million input tokens (for --budget-usd)")
    price_out_per_mtok: float = Field(0.0, description="USD per million output tokens")
    roles: dict[str, RoleConfig] = Field(default_factory=dict, description=f"per-role overrides: {', '.join(ROLES)}")
    legacy_max_tokens: bool = Field(False, description="send max_tokens (not max_completion_tokens): llama.cpp")
    structured: Literal["auto", "tools", "json_schema", "llamacpp", "text"] = Field(
        "auto", description="how answers are held to their schema: tools (a forced function call), json_schema "
                            "(response_format with a strict JSON schema: OpenAI, vLLM guided decoding, llama.cpp's "
                            "llama-server, Ollama), llamacpp (llama-cpp-python's json_object + schema grammar), text "
                            "(a JSON object parsed from the reply); auto: llamacpp for the embedded server, else tools")
    stream: bool | None = Field(None, description="stream answers (live token counts; a cut request stops the "
                                                  "server's generation); None: on for the embedded server")
    embedded_model: Literal["qwen2.5-coder-1.5b", "smollm2-135m"] = Field(
        "qwen2.5-coder-1.5b", description="the embedded model: qwen2.5-coder-1.5b (make model-qwen) or "
                                          "smollm2-135m (plumbing only)")
    embedded_port: int = Field(0, description="port of the embedded server (0: a free one)")
    embedded_ctx: int = Field(4096, description="context length of the embedded model")
    embedded_threads: int = Field(0, ge=0, description="threads of the embedded server (0: every core but one)")


class TaxonomySize(BaseModel):
    """How big a taxonomy the LLM is asked for: courses per subject, sub-courses per course, points per sub-course
    (``schemas.sized_taxonomy`` bounds its answer to these)."""

    model_config = ConfigDict(extra="forbid")
    courses: int = Field(2, ge=1, description="courses per subject (paper: 55 over 6 subjects)")
    subcourses: int = Field(2, ge=1, description="sub-courses per course")
    points: int = Field(2, ge=1, description="knowledge points per sub-course (paper: 3,915 in all)")


class Budgets(BaseModel):
    """A run stops (and assembles what it has) when any budget is spent. None: unlimited."""

    model_config = ConfigDict(extra="forbid")
    max_videos: int | None = Field(20, ge=1, description="accepted videos for the whole run")
    max_search_units: int | None = Field(3000, ge=0, description="YouTube API quota units for the run")
    daily_search_units: int = Field(10000, ge=1, description="the project's daily YouTube quota (all runs)")
    max_llm_tokens: int | None = Field(None, ge=0, description="LLM tokens paid (cache hits are free)")
    max_usd: float | None = Field(None, ge=0, description="LLM spend in USD")
    max_wall_s: float | None = Field(None, gt=0, description="wall-clock seconds")


class ReviewConfig(BaseModel):
    """Where a human decides (agents/review.py): the taxonomy, and judgments scored inside ``band``."""

    model_config = ConfigDict(extra="forbid")
    taxonomy: bool = Field(False, description="pause after the taxonomy for a human to approve or edit it")
    borderline: bool = Field(False, description="queue metadata and transcript judgments scored in band for a human")
    band: tuple[float, float] = Field((4.0, 6.0), description="judge scores (0-10, ends included) a human decides")


class AgentConfig(BaseModel):
    """Every setting of `textbook build`: the LLM endpoints, the taxonomy's size, budgets, video sources, how many
    videos per knowledge point, search rounds, the judges and the rewrite. Unknown keys are an error."""

    model_config = ConfigDict(extra="forbid")
    llm: LLMConfig = LLMConfig()
    taxonomy: TaxonomySize = TaxonomySize()
    budgets: Budgets = Budgets()
    sources: list[str] = Field(default_factory=lambda: ["ytdlp"],
                               description="youtube, ytdlp, local:DIR, urls:FILE (tried in order on quota)")
    per_point: int = Field(1, ge=1, description="accepted videos wanted per knowledge point")
    queries_per_point: int = Field(1, ge=1, description="queries written per point per round")
    results_per_query: int = Field(10, ge=1, le=50, description="search results kept per query (paper: 50)")
    max_rounds: int = Field(3, ge=1, description="coverage rounds: re-query short points with new phrasings")
    comments: int = Field(5, description="top comments fetched per YouTube video for the metadata judge")
    min_relevance: float = Field(0.5, ge=0, le=1, description="local and URL sources: a file is found by a query "
                                 "only if its relevance (tools.search.relevance) reaches this")
    min_fit: float = Field(0.15, ge=0, le=1, description="a video is assigned only to knowledge points it fits at "
                           "least this well (agents.assign.fit)")
    library_points: bool = Field(True, description="a local folder or URL list: a video whose topic no knowledge "
                                 "point covers gets a point of its own under its subject (agents.assign."
                                 "ground_in_library)")
    min_metadata_score: int = Field(5, ge=0, le=10, description="an accept below this score is a reject")
    transcript_chars: int = Field(6000, description="transcript characters shown to each transcript judge")
    polish: bool = Field(True, description="rewrite each clip paragraph for fluency (paper: ASR rewrite)")
    polish_min_overlap: float = Field(0.5, ge=0, le=1, description="a rewrite keeping fewer of the raw "
                                      "paragraph's content words is refused (pipeline.faithfulness)")
    polish_terms: bool = Field(True, description="give the polisher the clip's slide terms (kept OCR lines) to fix "
                               "misheard words with (false: the plain rewrite); every rewrite is checked either way")
    polish_min_ratio: float = Field(0.6, gt=0, description="a rewrite shorter than this share of the raw "
                                    "paragraph's words is refused")
    polish_max_ratio: float = Field(1.3, gt=0, description="a rewrite longer than this share of the raw "
                                    "paragraph's words is refused")
    clip_judge: str = Field("llm", description="llm: the clip judge model decides; rules: signals only")
    clip_min_similarity: float = Field(0.15, description="rules: ASR-OCR similarity below this drops frames")
    visual_filter: Literal["auto", "caption", "off"] = Field(
        "auto", description="the paper's visual clip filter: the captioner role's vision model (agent.llm.roles."
                            "captioner: any OpenAI-compatible VLM, model and base_url) captions each clip's keyframes "
                            "and a clip whose caption's similarity to its ASR paragraph is below "
                            "caption_min_similarity loses its frames (its text stays); caption: on (a captioner "
                            "must be configured); auto: on when roles.captioner names a model; off")
    caption_min_similarity: float = Field(
        0.27, ge=-1, le=1, description="visual filter: a clip whose caption-ASR cosine similarity (MiniLM, as the "
                                       "ASR-OCR similarity) is below this drops its frames; chosen on a labelled "
                                       "set (bench/bench_caption_filter.py)")
    caption_max_images: int = Field(4, ge=1, description="visual filter: keyframes sent in a clip's one caption "
                                    "request at most (evenly spaced over the clip when it has more)")
    download_max_height: int = Field(480, description="yt-dlp video height cap")
    download_retries: int = 3
    on_invalid: Literal["accept", "reject", "fail"] = Field(
        "accept", description="a judge or rewrite whose answer never validates: accept or reject by policy, or "
                              "fail the video (recorded as failed with kind invalid_output; a rerun asks again)")
    video_workers: int | None = Field(
        None, ge=1, description="videos moving through the build at once (each on a worker thread); none: the "
                                "gateway's request limit (llm.concurrency). Heavy stages stay bounded by "
                                "pipeline.workers, LLM requests by llm.concurrency per endpoint")
    review: ReviewConfig = ReviewConfig()
    enforce_judges: Literal["auto", "yes", "no"] = Field(
        "auto", description="yes: judges drop videos and clips; no: advisory (verdicts recorded, nothing dropped); "
                            "auto: yes with a configured model; with the embedded model, each judge whose measured "
                            "accuracy (agents/judge_accuracy.json) reaches judge_bar is enforced, the others advisory")
    use_rewrite: Literal["auto", "yes", "no"] = Field(
        "auto", description="yes: a rewrite that passes its check replaces the raw paragraph in the corpus; no: "
                            "advisory (asked, checked and stored; the raw text kept, with its slide fixes when "
                            "polish_terms); auto: yes with a configured model; with the embedded model, yes only "
                            "when its kept rewrite was measured to beat what is kept without it: the ASR corrected "
                            "from the slide, or the raw ASR without polish_terms (agents/judge_accuracy.json, key "
                            "polish, bench/bench_grounding.py)")
    judge_bar: float = Field(0.85, ge=0, le=1, description="accuracy on the labelled set (examples/judge_eval) an "
                             "embedded judge needs to be enforced under enforce_judges = auto")

    @model_validator(mode="after")
    def _captioner_when_filtering(self) -> AgentConfig:
        """``visual_filter = caption`` needs a captioner with its own model and an endpoint (the embedded text
        model cannot see images)."""
        if self.visual_filter == "caption":
            role = self.llm.roles.get("captioner")
            if role is None or not role.model:
                raise ValueError("visual_filter = caption needs a vision model: set agent.llm.roles.captioner.model "
                                 "(and its base_url)")
        if self.caption_filter_on() and not (self.llm.roles["captioner"].base_url or self.llm.base_url):
            raise ValueError("the visual filter's captioner needs an OpenAI-compatible vision endpoint: set "
                             "agent.llm.roles.captioner.base_url (the embedded server reads no images)")
        return self

    def caption_filter_on(self) -> bool:
        """Whether the visual clip filter runs: ``visual_filter`` caption, or auto with a captioner model."""
        role = self.llm.roles.get("captioner")
        return self.visual_filter == "caption" or (self.visual_filter == "auto" and bool(role and role.model))
