"""Sphinx extension: work-arounds for the pinned Sphinx 7.4 (myst-parser 3 keeps the book below 8).

Sphinx 7.4 re-adds the registry's inline scripts with ``filename=''`` instead of ``None`` on each page,
so some extensions' inline scripts (e.g. ``THEBE_JS_URL``) are written twice and the browser raises
"Identifier has already been declared" on every page (sphinx-doc/sphinx#13402, fixed in 8.2.2).
Coercing the file name back to ``''`` for both calls makes the builder recognise the duplicate.
"""

from __future__ import annotations


def _coerce_inline_scripts(app) -> None:
    add_js_file = getattr(app.builder, "add_js_file", None)
    if add_js_file is None:
        return

    def add(filename, **kwargs):
        return add_js_file(filename or "", **kwargs)

    app.builder.add_js_file = add


def setup(app):
    app.connect("builder-inited", _coerce_inline_scripts, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
