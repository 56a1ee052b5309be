"""Small shared test data."""

import copy

TOY_TRAIT = {
    "name": "toy",
    "adjective": "toy",
    "antonym": "plain",
    "description": "A toy trait for tests.",
    "instructions": [{"pos": f"Say toy things {i}.", "neg": f"Say plain things {i}."} for i in range(5)],
    "questions": {
        "extraction": ["What is up?", "How are you?", "Why is the sky blue?"],
        "evaluation": ["Where is the cat?", "When is lunch?"],
    },
    "rubric": "Rate toyness 0-100.\nQuestion: {question}\nAnswer: {answer}\nReply with a number.",
    "exemplars": {
        "pos": ["toys toys toys!", "I love toy blocks and dolls."],
        "neg": ["The report is due on Monday.", "Water boils at 100 degrees."],
    },
    "graded_prompts": [],
}


def toy_trait_dict(**changes):
    d = copy.deepcopy(TOY_TRAIT)
    d.update(changes)
    return d


# A chapter source that calls one of these makes a figure: its page must show one.
PLOT_CALL = r"\bplot_\w+\(|plt\.show\(\)|\.figure\b"


def count_generate(monkeypatch, module, *also) -> list[list[str]]:
    """Record the prompts of each ``generate`` call made through ``module`` and the modules in
    ``also`` (the calls still run): extraction generates through its own name for ``generate``
    and, reading the answers' activations, through ``prompting.generate_reading_response``."""
    calls: list[list[str]] = []
    real = module.generate

    def counting(model, prompts, **kw):
        calls.append(list(prompts))
        return real(model, prompts, **kw)

    for m in (module, *also):
        monkeypatch.setattr(m, "generate", counting)
    return calls
