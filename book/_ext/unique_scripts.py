"""Drop repeated inline scripts from every page.

Jupyter Book 1 runs sphinx-thebe's set-up twice, so every page declared
``const THEBE_JS_URL`` twice and the browser stopped that script with "Identifier
'THEBE_JS_URL' has already been declared" (found by ``make check-browser``).
"""

from __future__ import annotations


def _unique(app, pagename, templatename, context, doctree) -> None:
    seen: set[tuple[str, str]] = set()
    unique = []
    for script in context.get("script_files", []):
        # the two copies differ only in an empty file name ('' vs None): compare what the page gets
        attributes = getattr(script, "attributes", {})
        key = (str(getattr(script, "filename", script) or ""), str(sorted(attributes.items())))
        if key in seen:
            continue
        seen.add(key)
        unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", _unique, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
