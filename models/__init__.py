"""The model (torch only): a Llama-style decoder, its named presets and its FSDP2 wrapping."""
from .llama import Llama, ModelConfig, document_ids
from .presets import PRESETS, build_config

__all__ = ["Llama", "ModelConfig", "PRESETS", "build_config", "document_ids"]
