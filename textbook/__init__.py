"""textbook: build an image-text interleaved corpus (a multimodal textbook) from instructional videos."""

__version__ = "0.1.0"
