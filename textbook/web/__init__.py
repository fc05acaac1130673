"""`textbook view`: the store in a browser (runs, a run's graph and funnel, videos, samples, stats, search)
and the review forms of a build that waits for a human.

Server-rendered with FastAPI/Starlette and Jinja2 (autoescaping on), no JavaScript build step. Every
read goes through ``textbook.web.queries`` over an object with ``rows(sql, params) -> list[dict]``, so
the same pages serve a store file (``textbook view``) or a running build (``textbook build --view``).
"""
