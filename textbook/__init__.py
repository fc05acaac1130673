"""textbook: build an image-text interleaved corpus (a multimodal textbook) from instructional videos.

The user-facing package: ``textbook.cli:main`` is the `textbook` command (process, build, export, stats, runs,
trace, batch, view, review, train, eval, llm serve, doctor; cli_*.py register the commands of each area),
``settings.load_settings`` merges flags, TEXTBOOK_* environment and a config file, ``console`` prints progress,
and ``web`` is the browser viewer. The work itself lives in pipeline/, agents/, tools/, store/ and train/.
"""

__version__ = "0.1.0"
