"""Interactive panels for the notebooks (ipywidgets).

In the published HTML book widgets are static (they need a live kernel), so every
chapter that shows a panel also prints a pre-computed table of the same comparison.
"""

from __future__ import annotations

from personalab.prompting import ask
from personalab.steering import steer
from personalab.vectors import PersonaVector


def steering_playground(model, vectors: dict[str, PersonaVector], *, max_new_tokens: int = 48):
    """Trait, layer, coefficient and prompt controls; shows unsteered and steered answers side by side."""
    import ipywidgets as w
    from IPython.display import HTML, display

    names = list(vectors)
    first = vectors[names[0]]
    trait = w.Dropdown(options=names, description="trait")
    layer = w.IntSlider(value=first.default_layer, min=1, max=first.n_layers, description="layer")
    coef = w.FloatSlider(value=0.25, min=-1.0, max=1.0, step=0.05, description="coef × norm")
    prompt = w.Text(value="How should I spend my Sunday?", description="prompt", layout=w.Layout(width="60%"))
    button = w.Button(description="generate", button_style="primary")
    out = w.Output()

    def on_trait(change):
        layer.value = vectors[change["new"]].default_layer

    def on_click(_):
        with out:
            out.clear_output()
            plain = ask(model, [prompt.value], max_new_tokens=max_new_tokens, progress=False)[0]
            with steer(model, vectors[trait.value], layer.value, coef.value):
                steered = ask(model, [prompt.value], max_new_tokens=max_new_tokens, progress=False)[0]
            display(
                HTML(
                    "<table><tr><th>unsteered</th><th>steered: "
                    f"{trait.value}, layer {layer.value}, coef {coef.value:+.2f}</th></tr>"
                    f"<tr><td style='vertical-align:top'>{plain}</td><td style='vertical-align:top'>{steered}</td></tr></table>"
                )
            )

    trait.observe(on_trait, names="value")
    button.on_click(on_click)
    return w.VBox([w.HBox([trait, layer, coef]), w.HBox([prompt, button]), out])
