"""Training and evaluation on exported corpora (issue 4): not built yet."""
