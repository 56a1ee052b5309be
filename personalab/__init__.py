"""personalab: persona vectors on small chat models, with a book that runs on a laptop."""

from personalab.models import DEFAULT_MODEL, load_model, set_threads, tiny_model

# Importing personalab changes no torch setting: load_model() and tiny_model() apply
# $PERSONALAB_THREADS (default 1) unless set_threads() was called first.

__all__ = ["DEFAULT_MODEL", "load_model", "set_threads", "tiny_model"]
__version__ = "0.1.0"
