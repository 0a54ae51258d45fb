"""decontaminate stage: benchmark items (word n-gram overlap) out of the training documents."""
from .stage import run_decontaminate

__all__ = ["run_decontaminate"]
