"""Models: loading (hub id, local folder, GGUF, repository reference, the embedded default) and LoRA."""
