"""Tools: one module per capability, each with one main verb and plain dataclass results.

media       ``probe``, ``extract_audio``, ``read_frames`` (ffprobe/ffmpeg, PyAV)
asr         ``Transcriber(AsrOptions).transcribe`` (faster-whisper; offline whisper-base by default)
keyframes   ``detect`` (the paper's SSIM rule, robust to motion); ocr: ``make_reader`` (tesseract or a VLM)
search      ``make_source``: YouTube Data API, yt-dlp search, a local folder, a URL list; download: ``download``
embed       ``TextEmbedder`` (all-MiniLM-L6-v2, offline); errors: ``ToolError`` (a message and a kind)

Each tool loads its model once and says which model and options produced a result. Tools import nothing of
ours but small value types: never DuckDB, LangGraph or the pipeline.
"""
