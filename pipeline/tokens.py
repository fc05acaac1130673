"""Token counting for ``token_num`` and the packing budget.

The default is Whisper's BPE tokenizer, which ships with the offline model, so
counts work with no network; pass any tokenizer.json for the target model's counts.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=4)
def _tokenizer(name: str):
    from tokenizers import Tokenizer

    from tools.asr import offline_tokenizer_path

    path = offline_tokenizer_path() if name == "whisper" else name
    return Tokenizer.from_file(str(path))


def count_tokens(text: str, tokenizer: str = "whisper") -> int:
    """Tokens of ``text`` without special tokens, by ``tokenizer``: ``whisper`` (the offline whisper tokenizer) or a
    tokenizer.json path; 0 for empty text."""
    if not text:
        return 0
    return len(_tokenizer(tokenizer).encode(text, add_special_tokens=False).ids)


def count_tokens_many(texts: list[str], tokenizer: str = "whisper") -> list[int]:
    """Token counts of many texts in one batched call (the Rust tokenizer's threads)."""
    if not texts:
        return []
    return [len(e.ids) for e in _tokenizer(tokenizer).encode_batch(texts, add_special_tokens=False)]
