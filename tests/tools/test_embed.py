"""The offline all-MiniLM-L6-v2: verified weights, unit vectors, related texts closer than unrelated."""

from __future__ import annotations

import numpy as np
import pytest

from tools.embed import OFFLINE_MODEL_SHA256, TextEmbedder, offline_model_path, verify_model
from tools.errors import ToolError

NEWTON = "Newton's second law: force equals mass times acceleration"
FMA = "F = m a, the force on a body is its mass times its acceleration"
RAIN = "Rainfall and evaporation in the water cycle"


@pytest.fixture(scope="module")
def embedder() -> TextEmbedder:
    return TextEmbedder()


def test_related_texts_score_higher(embedder):
    related = embedder.similarity(NEWTON, FMA)
    unrelated = embedder.similarity(NEWTON, RAIN)
    assert related > 0.5 > 0.2 > unrelated
    assert embedder.similarity(NEWTON, NEWTON) == pytest.approx(1.0, abs=1e-5)
    assert embedder.model_name == "sentence-transformers/all-MiniLM-L6-v2"
    assert embedder.model_sha256 == OFFLINE_MODEL_SHA256


def test_shapes_and_norms(embedder):
    vectors = embedder.encode([NEWTON, FMA, RAIN])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.encode([]).shape == (0, 384)
    scores = embedder.pairwise([NEWTON, NEWTON, RAIN], [FMA, RAIN, RAIN])
    assert scores.shape == (3,) and scores.dtype == np.float32
    assert scores[0] > scores[1] and scores[2] == pytest.approx(1.0, abs=1e-5)
    assert scores[0] == pytest.approx(embedder.similarity(NEWTON, FMA), abs=1e-5)
    with pytest.raises(ValueError):
        embedder.pairwise([NEWTON], [])


def test_offline_weights_are_verified(tmp_path):
    assert verify_model(offline_model_path()) == OFFLINE_MODEL_SHA256
    (tmp_path / "model.safetensors").write_bytes(b"not the model")
    with pytest.raises(ToolError) as err:
        verify_model(tmp_path)
    assert err.value.kind == "model" and "\n" not in str(err.value)
    with pytest.raises(ToolError, match="cannot read"):
        verify_model(tmp_path / "nowhere")


def test_a_missing_model_is_a_model_error(tmp_path):
    with pytest.raises(ToolError) as err:
        TextEmbedder(str(tmp_path / "no-such-model")).encode(["x"])
    assert err.value.kind == "model"
