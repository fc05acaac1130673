"""`textbook estimate`: LLM calls, tokens, search units, GPU-, CPU- and wall hours of a run, before it runs.

    textbook estimate "build a chemistry textbook" [--per-point 3] [--gpus 1 --cpus 16 --llm-rps 20]
    textbook estimate lessons/ [--llm]                       # durations summed with ffprobe
    textbook estimate --paper --gpus 8 --cpus 128            # the paper's corpus
    textbook estimate --videos 1000 --hours 300 --from-run RUN_ID --db runs.duckdb [--json]

The arithmetic and its sources are agents/estimate.py; this module parses options and prints.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

IntOpt = Optional[int]
FloatOpt = Optional[float]


def _goal_or_paths(inputs: list[str]) -> tuple[str | None, list[str]]:
    """One argument that is no existing path and names no video file: a goal; otherwise video paths."""
    from tools.media import VIDEO_EXTENSIONS

    if len(inputs) == 1:
        p = Path(inputs[0])
        if not p.exists() and p.suffix.lower() not in VIDEO_EXTENSIONS and os.sep not in inputs[0]:
            return inputs[0], []
    return None, inputs


def register(app: typer.Typer, user_error: type[Exception], setup_logging) -> None:
    @app.command()
    def estimate(
        inputs: Annotated[Optional[list[str]], typer.Argument(help="a goal (\"build a chemistry textbook\") or "
                                                                   "video files and folders")] = None,
        paper: Annotated[bool, typer.Option("--paper", help="the paper's corpus: 3,915 points, 159,565 videos, "
                                                            "75K kept, 22,697 h, 4M clips, 6.58M keyframes")] = False,
        points: Annotated[IntOpt, typer.Option(help="knowledge points (default: the taxonomy size)")] = None,
        per_point: Annotated[IntOpt, typer.Option(help="videos kept per point (default: agent.per_point)")] = None,
        videos: Annotated[IntOpt, typer.Option(help="candidate videos found (each judged on its metadata)")] = None,
        transcribed: Annotated[IntOpt, typer.Option(help="videos downloaded and transcribed")] = None,
        kept: Annotated[IntOpt, typer.Option(help="videos kept (keyframes, OCR, clips)")] = None,
        hours: Annotated[FloatOpt, typer.Option(help="hours of the kept videos")] = None,
        clips: Annotated[IntOpt, typer.Option(help="clips of the kept videos")] = None,
        keyframes: Annotated[IntOpt, typer.Option(help="keyframes of the kept videos")] = None,
        gpus: Annotated[int, typer.Option(help="GPUs (0: ASR on CPU)")] = 0,
        cpus: Annotated[IntOpt, typer.Option(help="CPU cores for the CPU stages (default: this machine's)")] = None,
        llm_rps: Annotated[FloatOpt, typer.Option("--llm-rps", help="LLM calls per second the endpoint takes "
                                                                   "(default: measured)")] = None,
        asr_rate: Annotated[FloatOpt, typer.Option("--asr-gpu-rate", help="audio-hours per GPU-hour (default: "
                                                                         "the published 100 of whisper "
                                                                         "large-v3)")] = None,
        llm: Annotated[Optional[bool], typer.Option("--llm/--no-llm", help="count the judges' and rewrites' calls "
                                                                           "(default: yes, except for video "
                                                                           "paths: `process` asks no model)")] = None,
        visual_filter: Annotated[Optional[bool], typer.Option(
            "--visual-filter/--no-visual-filter", help="count a caption of each clip (the paper's visual clip "
                                                       "filter; default: as configured, agent.visual_filter; on "
                                                       "with --paper)")] = None,
        from_run: Annotated[Optional[str], typer.Option("--from-run", help="take the rates from this run of "
                                                                          "--db")] = None,
        db: Annotated[Optional[Path], typer.Option("--db", help="DuckDB file of --from-run (env TEXTBOOK_DB)")] = None,
        calibrate: Annotated[bool, typer.Option("--calibrate/--no-calibrate", help="measure the CPU stages here "
                                                                                   "on a generated video (~40 s "
                                                                                   "of work; not with "
                                                                                   "--from-run)")] = True,
        config: Annotated[Optional[Path], typer.Option("--config", help="settings file (TOML, YAML or "
                                                                        "JSON)")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="print JSON on stdout")] = False,
    ) -> None:
        """What a run will take, before anything is paid: LLM calls and tokens per role, search units,
        GPU-, CPU- and wall hours, each figure with where it came from."""
        from agents import estimate as est

        try:
            from textbook.cli_agent import existing_db, load_settings, open_store

            setup_logging(True)
            goal, paths = _goal_or_paths(list(inputs or []))
            if paper and inputs:
                raise user_error("--paper sizes the paper's corpus: leave out the goal or paths")
            given = (("points", points), ("videos", videos), ("transcribed", transcribed), ("kept", kept),
                     ("hours", hours), ("per-point", per_point))
            sized = [f"--{k}" for k, v in given if v is not None]
            if sized and (paper or paths):
                raise user_error(f"{', '.join(sized)}: {'the paper sizes' if paper else 'the files size'} the run; "
                                 f"leave {'it' if len(sized) == 1 else 'them'} out")
            if db is not None and not from_run:
                raise user_error("--db is read only with --from-run RUN_ID")
            settings = load_settings(config, {"db": db} if db else {})
            agent = settings.agent
            design = est.Design(queries_per_point=agent.queries_per_point, results_per_query=agent.results_per_query,
                                rounds=1, comments=agent.comments if "youtube" in agent.sources else 0,
                                polish=agent.polish, clip_judge=agent.clip_judge == "llm",
                                visual_filter=agent.caption_filter_on() if visual_filter is None else visual_filter,
                                caption_images=agent.caption_max_images,
                                planner=goal is not None, search=goal is not None,
                                llm=llm if llm is not None else not paths, youtube="youtube" in agent.sources)
            size, taxonomy = agent.taxonomy, None
            if paper:
                design, points = est.paper_design(visual_filter is not False), est.PAPER["points"]
            if goal is not None and points is None:
                from agents.graph import named_subjects

                subjects = max(1, len(named_subjects(goal)))
                points = subjects * size.courses * size.subcourses * size.points
                taxonomy = (f"taxonomy: {subjects} subject(s) x {size.courses} courses x {size.subcourses} "
                            f"sub-courses x {size.points} points (agent.taxonomy)")
            rates = est.default_rates(points or 0, design.queries_per_point)
            if asr_rate is not None and asr_rate <= 0:
                raise user_error(f"--asr-gpu-rate must be above 0 (got {asr_rate})")
            if from_run:
                store = open_store(existing_db(settings.db, user_error), read_only=True)
                try:
                    rates = est.rates_from_run(store, from_run, rates)
                finally:
                    store.close()
            if paper:
                sizes = est.paper_sizes()
            elif paths:
                from pipeline.runner import discover

                n, h = est.video_hours(discover(paths))
                sizes = est.derive_sizes(rates, found=n, transcribed=n, kept=n, hours=h, hours_transcribed=h,
                                         clips=clips, keyframes=keyframes, given="ffprobe")
            else:
                sizes = est.derive_sizes(
                    rates, points=points, found=videos, transcribed=transcribed, kept=kept, hours=hours, clips=clips,
                    keyframes=keyframes, per_point=per_point or agent.per_point,
                    candidates_per_point=design.queries_per_point * design.results_per_query * design.rounds,
                    max_videos=agent.budgets.max_videos if goal is not None and kept is None else None)
            for bad, says in ((gpus < 0, f"--gpus must be 0 or more (got {gpus})"),
                              (cpus is not None and cpus < 1, f"--cpus must be at least 1 (got {cpus})"),
                              (llm_rps is not None and llm_rps <= 0, f"--llm-rps must be above 0 (got {llm_rps})")):
                if bad:  # before the calibration's ~40 s
                    raise user_error(says)
            if calibrate and not from_run:  # the CPU stages' rates only: the sizes above do not change
                rates = est.calibrate(rates, config)
            if asr_rate is not None:  # a flag beats a published rate and a measurement
                rates.stages = [s for s in rates.stages if not (s.stage == "asr" and s.device == "gpu")] + [
                    est.StageRate("asr", "gpu", "media_hour", 3600 / asr_rate, "given")]
            if taxonomy is not None:
                sizes.sources["points"] = taxonomy
            rps = est.Figure(llm_rps, "given") if llm_rps is not None else rates.llm_calls_per_s
            cluster = est.Cluster(gpus=gpus, cpu_cores=cpus if cpus is not None else (os.cpu_count() or 1),
                                  llm_calls_per_s=rps, daily_search_units=agent.budgets.daily_search_units)
            result = est.project(sizes, rates, design, cluster)
            if goal is not None and agent.max_rounds > 1:
                result.notes.append(f"one search round counted: rounds 2-{agent.max_rounds} (agent.max_rounds) "
                                    "re-query only the points still short of videos")
            cap = agent.budgets.max_search_units
            if goal is not None and cap is not None and result.search_units > cap:
                result.notes.append(f"the run's search budget (agent.budgets.max_search_units {cap:,}) stops the "
                                    f"build before its {result.search_units:,} units")
            if as_json:
                print(json.dumps(result.to_json(), indent=2))
                return
            print("\n".join(est.render(result, rates)))
        except est.EstimateError as exc:
            raise user_error(str(exc)) from exc
