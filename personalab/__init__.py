"""personalab: persona vectors on small chat models, with a book that runs on a laptop."""

from personalab.models import DEFAULT_MODEL, load_model, set_threads, tiny_model

set_threads()  # 1 thread unless $PERSONALAB_THREADS says otherwise (see models.set_threads)

__all__ = ["DEFAULT_MODEL", "load_model", "set_threads", "tiny_model"]
__version__ = "0.1.0"
