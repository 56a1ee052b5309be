"""personalab: persona vectors on small chat models, with a book that runs on a laptop.

The names a learner uses are importable from the top level; all but the model loaders
are imported on first use, so ``import personalab`` stays quick (no peft, no sklearn):

    import personalab as pl
    model = pl.load_model()
    vec = pl.persona_vector(model, "pirate")
    with pl.steer(model, vec, vec.default_layer, 0.2):
        print(pl.ask(model, ["Tell me about the sea."]))
"""

from importlib import import_module

from personalab.models import DEFAULT_MODEL, load_model, set_threads, tiny_model

# Importing personalab changes no torch setting: load_model() and tiny_model() apply
# $PERSONALAB_THREADS (default 1) unless set_threads() was called first.

_LAZY = {  # public name -> module that defines it, one step of the method per line
    "residual_stream": "activations",
    "answer_activations": "activations",
    "PersonaVector": "vectors",
    "project": "vectors",
    "chat_prompt": "prompting",
    "ask": "prompting",
    "generate": "prompting",
    "Trait": "traits",
    "load_trait": ("traits", "load"),
    "list_traits": "traits",
    "EmbeddingJudge": "judges",
    "OpenAIJudge": "judges",
    "persona_vector": "extraction",
    "extract_persona_vector": "extraction",
    "persona_vectors": "extraction",
    "steer": "steering",
    "cap": "steering",
    "steer_when": "steering",
    "sweep": "steering",
    "Monitor": "monitoring",
    "load_dataset": "finetune",
    "LoraSettings": "finetune",
    "TrainingSteering": "finetune",
    "projection_difference": "datafilter",
}

__all__ = ["DEFAULT_MODEL", "load_model", "set_threads", "tiny_model", *_LAZY]
__version__ = "0.1.0"


def __getattr__(name: str):
    """Import a public name's module on first use (PEP 562)."""
    if name not in _LAZY:
        raise AttributeError(f"module 'personalab' has no attribute {name!r}")
    module, attr = _LAZY[name] if isinstance(_LAZY[name], tuple) else (_LAZY[name], name)
    value = getattr(import_module(f"personalab.{module}"), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
