"""A quick check before reaching the HF hub, so that no network means one clear line at once
(huggingface_hub itself retries for minutes and logs each try)."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse


def hub_problem(repo_id: str, timeout: float = 3.0) -> str | None:
    """Why ``repo_id`` cannot come from the hub now, or None (it is cached, or the hub answers)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
            return None
    except Exception:  # noqa: BLE001 - a malformed id or an old huggingface_hub: let the download decide
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set and it is not in the HF cache"
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return f"no network ({host} cannot be reached) and it is not in the HF cache"
    return None
