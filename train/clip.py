"""Image features from a CLIP-style vision encoder, for RICES demonstrations and SIM^L.

``ImageEncoder`` wraps any transformers model with ``get_image_features`` (CLIP, SigLIP) or
a vision model with projection; ``load_image_encoder`` loads one by hub id or folder. The
paper's encoder (``DEFAULT_CLIP``) needs a download once; ``tiny_clip_encoder`` builds a
small random CLIP from a config, for tests and smoke runs (its features mean nothing).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from train.hub import hub_problem

log = logging.getLogger(__name__)

DEFAULT_CLIP = "openai/clip-vit-large-patch14-336"


class EncoderError(Exception):
    """An image encoder that cannot be loaded; the message is one line for the user."""


class ImageEncoder:
    """L2-normalised image features: ``encode(images) -> float32 array (n, dim)``."""

    def __init__(self, model, processor, name: str = "custom", device: str = "cpu", batch_size: int = 16):
        self.model = model.eval().to(device)
        self.processor = processor
        self.name = name
        self.device = device
        self.batch_size = batch_size

    def encode(self, images: Sequence[Image.Image]) -> np.ndarray:
        """The images' features, L2-normalised: float32 array (n, dim), computed ``batch_size`` images at a time in RGB;
        (0, 0) for no image."""
        import torch

        out = []
        for start in range(0, len(images), self.batch_size):
            batch = [im.convert("RGB") for im in images[start:start + self.batch_size]]
            pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"].to(self.device)
            pixels = pixels.to(next(self.model.parameters()).dtype)
            with torch.inference_mode():
                if hasattr(self.model, "get_image_features"):
                    feats = self.model.get_image_features(pixel_values=pixels)
                else:
                    feats = self.model(pixel_values=pixels)
                if not torch.is_tensor(feats):  # transformers 5: an output whose pooler_output is projected
                    embeds = getattr(feats, "image_embeds", None)
                    feats = embeds if embeds is not None else feats.pooler_output
                feats = torch.nn.functional.normalize(feats.float(), dim=-1)
            out.append(feats.cpu().numpy())
        if not out:
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate(out).astype(np.float32)


def load_image_encoder(name_or_path: str = DEFAULT_CLIP, device: str = "cpu") -> ImageEncoder:
    """A CLIP-style encoder by hub id or local folder ("tiny": a random one, to test the plumbing
    offline); one-line EncoderError when it cannot load."""
    if name_or_path == "tiny":
        return tiny_clip_encoder()
    from transformers import AutoImageProcessor, AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if not Path(name_or_path).exists():
        why = hub_problem(str(name_or_path))
        if why:
            raise EncoderError(f"cannot load the image encoder {name_or_path}: {why}; pass a downloaded CLIP "
                               "folder: --clip-model PATH")
    try:
        processor = AutoImageProcessor.from_pretrained(name_or_path)
        model = AutoModel.from_pretrained(name_or_path)
    except (OSError, ValueError) as exc:
        raise EncoderError(f"cannot load the image encoder {name_or_path!r} ({str(exc).splitlines()[0][:160]}); "
                           "with no network, pass a downloaded CLIP folder: --clip-model PATH") from exc
    if not hasattr(model, "get_image_features") and not hasattr(model, "visual_projection"):
        raise EncoderError(f"{name_or_path!r} is not an image encoder with projected features (CLIP, SigLIP)")
    return ImageEncoder(model, processor, name=str(name_or_path), device=device)


def tiny_clip(seed: int = 0, image_size: int = 32):
    """(model, processor): a small random CLIP built from a config, no download."""
    import torch
    from transformers import CLIPConfig, CLIPModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    try:
        from transformers import CLIPImageProcessorPil as Processor
    except ImportError:  # pragma: no cover - older transformers
        from transformers import CLIPImageProcessor as Processor
    config = CLIPConfig(
        text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=64, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=8),
        projection_dim=16)
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    processor = Processor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    return model, processor


def tiny_clip_encoder(seed: int = 0) -> ImageEncoder:
    """An encoder over a tiny randomly initialised CLIP (offline, seeded): for tests, not for real neighbours."""
    model, processor = tiny_clip(seed)
    return ImageEncoder(model, processor, name="tiny-random-clip")
