"""Typed records that cross module boundaries.

``Status``: the one status of a candidate video in a run, in funnel order (the build's funnel and
``textbook stats`` count by it). Values are the strings stored in ``candidates.status``.
"""

from __future__ import annotations

import enum


class Status(enum.StrEnum):
    """Where a candidate stands in its run, in funnel order; the ends (rejections, failures) last."""

    FOUND = "found"                          # a search found it for a knowledge point
    REVIEW_META = "review_meta"              # metadata judged in the review band: waits for a human
    ACCEPTED_META = "accepted_meta"          # metadata judge accepted it: waits for a slot of its point
    DOWNLOADED = "downloaded"
    TRANSCRIBED = "transcribed"              # probe, rules, ASR done
    REVIEW_TRANSCRIPT = "review_transcript"  # transcript judged in the review band: waits for a human
    JUDGED = "judged"                        # the transcript judges kept it
    VISUALS = "visuals"                      # keyframes and OCR done
    ACCEPTED = "accepted"                    # a clip was kept: it is in the textbook
    JUDGED_OUT = "judged_out"                # the metadata judge (or placement) left it out
    DOWNLOAD_FAILED = "download_failed"
    TRANSCRIPT_REJECTED = "transcript_rejected"
    REJECTED = "rejected"                    # a pipeline rule or stage dropped it (the reason says which)
    FAILED = "failed"                        # a fault (LLM timeout, endpoint error, tool error): reason has the kind

    @property
    def order(self) -> int:
        """Position in the funnel (0 = found)."""
        return list(Status).index(self)
