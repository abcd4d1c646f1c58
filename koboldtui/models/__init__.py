"""GGUF models: the bundled default, the catalogue of files on disk, metadata and VRAM estimates."""
