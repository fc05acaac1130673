"""Run budgets: videos, search units, LLM tokens, money and wall time.

Checked before anything that spends: a spent budget raises ``BudgetExceeded`` and the
graph goes straight to assembling what the run has. Usage is read from the store, so a
resumed run counts what it paid before it was killed.

Thread-safe: the build's worker threads check at once; the tracker holds no state that changes
(usage is read from the store, which serializes its reads), so checks need no lock of their own.
Tokens and money are known only when an answer arrives, so a run can pass its LLM budget by at
most the requests already in flight when it was spent (``agent.llm.concurrency`` per endpoint).
"""

from __future__ import annotations

import datetime as dt
import time

from agents.config import Budgets
from agents.llm import BudgetExceeded


class BudgetTracker:
    """The budgets of one run (``Budgets``), checked before each spend; raises ``BudgetExceeded``."""

    def __init__(self, store, run_id: str, budgets: Budgets):
        self.store = store
        self.run_id = run_id
        self.b = budgets
        self.started = time.monotonic()

    def elapsed(self) -> float:
        """Seconds since the run started (this process's monotonic clock)."""
        return time.monotonic() - self.started

    def check_wall(self) -> None:
        """Raise BudgetExceeded("wall_time") once the run's wall seconds reach ``max_wall_s``."""
        if self.b.max_wall_s is not None and self.elapsed() >= self.b.max_wall_s:
            raise BudgetExceeded("wall_time", f"{self.elapsed():.0f} s of {self.b.max_wall_s:.0f} s")

    def check_llm(self) -> None:
        """Raise before an LLM request when the run's wall time, paid tokens or USD are spent."""
        self.check_wall()
        if self.b.max_llm_tokens is None and self.b.max_usd is None:
            return
        totals = self.store.llm_totals(self.run_id)
        if self.b.max_llm_tokens is not None and totals["paid_tokens"] >= self.b.max_llm_tokens:
            raise BudgetExceeded("llm_tokens", f"{totals['paid_tokens']} tokens of {self.b.max_llm_tokens}")
        if self.b.max_usd is not None and totals["cost_usd"] >= self.b.max_usd:
            raise BudgetExceeded("usd", f"${totals['cost_usd']:.4f} of ${self.b.max_usd:.2f}")

    def check_search(self, cost: int) -> None:
        """Raise if a search costing ``cost`` units would pass the run's budget."""
        self.check_wall()
        if cost and self.b.max_search_units is not None:
            used = self.store.search_units(self.run_id)
            if used + cost > self.b.max_search_units:
                raise BudgetExceeded("search_units", f"{used} units used, next search costs {cost}, "
                                                     f"budget {self.b.max_search_units}")

    def daily_units_left(self) -> int:
        """YouTube quota units left today (UTC) for the whole project, from the store."""
        midnight = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
        return self.b.daily_search_units - self.store.search_units(since=midnight)

    def videos_reached(self, accepted: int) -> bool:
        """Whether ``accepted`` videos reach ``max_videos`` (False without that budget): the build stops searching."""
        return self.b.max_videos is not None and accepted >= self.b.max_videos
