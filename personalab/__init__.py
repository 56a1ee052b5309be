"""personalab: persona vectors on small chat models, with a book that runs on a laptop."""

from personalab.models import DEFAULT_MODEL, load_model, set_threads, tiny_model

__all__ = ["DEFAULT_MODEL", "load_model", "set_threads", "tiny_model"]
__version__ = "0.1.0"
