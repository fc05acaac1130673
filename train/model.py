"""Vision-language models for training and eval: a tiny offline Idefics3, or any hub id / folder.

    model, processor = tiny_idefics3()                      # random weights, no download
    model, processor = load_model("HuggingFaceTB/SmolVLM-256M-Instruct", device="cuda")
    model, processor = load_model("ckpt/")                   # what `save` or `textbook train` wrote
    save(model, processor, "ckpt/")

The tiny model is an Idefics3ForConditionalGeneration built from a config (2-layer vision encoder and
2-layer Llama text model, hidden size 64, 64x64 images in 16x16 patches, so 4 image tokens per image)
and an Idefics3Processor built from Whisper's tokenizer.json (shipped offline by this project), cut to its
first 4096 tokens so that the output layer stays cheap on a CPU.
Nothing here downloads anything unless ``load_model`` is given a hub id.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

TINY = "tiny"
_EOT = "<|endoftext|>"
EOV_MARKER = "<|endofvideo|>"  # the end-of-video marker of pipeline.config.PackConfig
_IDEFICS3_TOKENS = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | capitalize }}:"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)


class ModelError(Exception):
    """A model or processor that cannot be built or loaded (the message is one line)."""


def tiny_processor(vocab_tokenizer: str | Path | None = None, image_size: int = 64, image_seq_len: int = 4,
                   vocab_size: int | None = 4096):
    """An Idefics3Processor that needs no download: Whisper's byte-level BPE plus Idefics3's special tokens.

    ``vocab_tokenizer`` is a byte-level BPE tokenizer.json (default: the Whisper one shipped by the offline
    ASR package). ``vocab_size`` keeps its first byte tokens and merges only (GPT-2-style vocabularies number
    merge k as token 256 + k, so the cut is a valid smaller BPE): the output layer of a tiny model is then
    cheap on a CPU. None keeps the whole vocabulary. Images are resized to ``image_size`` squares and never
    split, so each image is one crop of ``image_seq_len`` image tokens.
    """
    from tokenizers import Tokenizer, processors
    from transformers import Idefics3Processor, PreTrainedTokenizerFast

    if vocab_tokenizer is None:
        from tools.asr import offline_tokenizer_path

        vocab_tokenizer = offline_tokenizer_path()
    try:
        spec = json.loads(Path(vocab_tokenizer).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the tokenizer {vocab_tokenizer}: {exc}") from exc
    spec["post_processor"] = None  # Whisper's prepends <|startoftranscript|><|notimestamps|>
    if vocab_size is not None:
        _trim_bpe(spec, vocab_size)
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), bos_token=_EOT,
                                  eos_token=_EOT, pad_token="<pad>", unk_token=_EOT)
    tok.add_special_tokens({"additional_special_tokens": [*_IDEFICS3_TOKENS, EOV_MARKER]})
    bos = tok.bos_token  # a plain LM wants only BOS in front
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.bos_token_id)])
    sizes = {"size": {"longest_edge": image_size}, "max_image_size": {"longest_edge": image_size}}
    return Idefics3Processor(image_processor=_idefics3_image_processor(do_image_splitting=False, **sizes),
                             tokenizer=tok, image_seq_len=image_seq_len, chat_template=_TINY_CHAT_TEMPLATE)


def _trim_bpe(spec: dict, vocab_size: int) -> None:
    """Keep tokens below ``vocab_size`` and the merges that make them; <|endoftext|> follows them."""
    model = spec.get("model", {})
    if model.get("type") != "BPE" or vocab_size < 257:
        raise ModelError("vocab_size trimming needs a byte-level BPE tokenizer.json and vocab_size > 256")
    vocab = {t: i for t, i in model["vocab"].items() if i < vocab_size}
    merges = model["merges"][: max(0, vocab_size - 256)]
    model["vocab"], model["merges"] = vocab, merges
    spec["added_tokens"] = [{"id": len(vocab), "content": _EOT, "single_word": False, "lstrip": False,
                             "rstrip": False, "normalized": False, "special": True}]


def _idefics3_image_processor(**kwargs):
    try:  # transformers 5: the PIL backend needs no torchvision
        from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil as cls
    except ImportError:  # transformers 4: the only one is PIL/numpy based
        from transformers import Idefics3ImageProcessor as cls
    return cls(**kwargs)


def tiny_idefics3(vocab_tokenizer: str | Path | None = None, *, seed: int = 0, hidden: int = 64, layers: int = 2,
                  image_size: int = 64, patch_size: int = 16, max_positions: int = 4096,
                  vocab_size: int | None = 4096):
    """A tiny randomly initialised Idefics3ForConditionalGeneration and its offline processor.

    Returns ``(model, processor)``; the weights depend only on ``seed``. fp32, on the CPU.
    """
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, LlamaConfig

    scale = 2
    processor = tiny_processor(vocab_tokenizer, image_size=image_size,
                               image_seq_len=(image_size // patch_size) ** 2 // scale**2, vocab_size=vocab_size)
    tok = processor.tokenizer
    text = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                       num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=max_positions, pad_token_id=tok.pad_token_id,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
    vision = {"hidden_size": hidden, "intermediate_size": 2 * hidden, "num_hidden_layers": layers,
              "num_attention_heads": 4, "image_size": image_size, "patch_size": patch_size}
    config = Idefics3Config(text_config=text, vision_config=vision, scale_factor=scale,
                            image_token_id=image_token_id(processor), pad_token_id=tok.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Idefics3ForConditionalGeneration(config)
    return model.float(), processor


def model_source(name: str) -> str:
    """Where ``--model name`` comes from, checked without loading anything: ``"tiny"``, ``"folder"`` (a
    checkpoint folder with a config.json) or ``"hub"`` (an id like ``org/name``, not a local path).
    Raises ModelError with a one-line message for a missing path or a folder that is not a model."""
    if name == TINY:
        return TINY
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelError(f"{name} is not a model folder (no config.json)")
        return "folder"
    if not _HUB_ID.match(name):
        raise ModelError(f"no model at {name} (not a folder, and not a hub id like org/name)")
    return "hub"


def load_model(name_or_path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None):
    """``(model, processor)`` from ``"tiny"``, a local folder (a checkpoint of ``save``), or a hub id.

    A hub id (e.g. ``HuggingFaceTB/SmolVLM-256M-Instruct``) downloads through the hub cache, so it needs a
    network the first time. ``dtype`` defaults to float32 (training keeps fp32 weights and autocasts).
    Raises ModelError with a one-line message when nothing loadable is there.
    """
    name = str(name_or_path)
    kind = model_source(name)
    if kind == TINY:
        model, processor = tiny_idefics3()
        return model.to(device=device, dtype=dtype or torch.float32), processor
    if kind == "folder":
        name = str(Path(name).expanduser())
    from transformers import AutoModelForImageTextToText, AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(name)
        model = AutoModelForImageTextToText.from_pretrained(name, dtype=dtype or torch.float32)
    except Exception as exc:  # OSError (missing, offline), ValueError (not a vision-language model), ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"cannot load model {name}: {first}") from exc
    if getattr(processor, "image_processor", None) is None or not hasattr(processor, "tokenizer"):
        raise ModelError(f"{name} has no image processor: not a vision-language model")
    return model.to(device), processor


def save(model, processor, out_dir: str | Path) -> Path:
    """Write model weights (safetensors), config and processor, loadable by ``load_model(out_dir)``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def image_token_id(processor) -> int:
    """The id of the token that image features replace (``<image>`` for Idefics3 and LLaVA)."""
    tid = getattr(processor, "image_token_id", None)
    if tid is None:
        tid = processor.tokenizer.convert_tokens_to_ids(getattr(processor, "image_token", "<image>"))
    return int(tid)


def ensure_tokens(model, processor, tokens: list[str]) -> int:
    """Add ``tokens`` as special tokens where the tokenizer lacks them; resize the embeddings. Returns #added."""
    tok = processor.tokenizer
    missing = [t for t in tokens if t not in tok.get_vocab()]
    if not missing:
        return 0
    tok.add_tokens(missing, special_tokens=True)
    model.resize_token_embeddings(len(tok))
    return len(missing)
