"""The size of a figure's text as the page shows it.

A figure's PNG carries a record of its smallest text (:func:`text_record`, written by
:meth:`ctac_helpers.core.rundir.RunDir.write_figure` as the PNG text chunk :data:`KEY`). The page scales the
image to the width it has, so text of ``s`` points in a PNG of ``W`` pixels saved at ``dpi`` dots per inch,
shown ``w`` CSS pixels wide (96 per inch), reads as ``s * dpi * w / (96 * W)`` points
(:func:`shown_points`). The browser check (:mod:`ctac_helpers.publish.browser`) reads the record back
(:func:`read_record`) and compares that with :data:`MIN_POINTS`.
"""

from __future__ import annotations

import json
import os

#: The PNG text chunk holding a figure's text record (JSON: ``{"points": ..., "text": ...}``).
KEY = "ctac-book:smallest-text"
#: The smallest text a reader should have to read on the page, in points.
MIN_POINTS = 9.0
#: CSS pixels per inch (a CSS pixel is 1/96 inch; a point 1/72 inch).
CSS_PX_PER_INCH = 96.0


def text_sizes(fig) -> list[tuple[float, str]]:
    """Every piece of text the figure draws: its size in points and the text, in drawing order.

    The figure is drawn once on a renderer that records the text it is asked to draw, so only text that
    is drawn counts (not hidden labels, nor tick labels outside the axes' limits).

    Parameters
    ----------
    fig : matplotlib.figure.Figure

    Returns
    -------
    list of (float, str)
        One entry per line of text drawn; empty lines are left out.
    """
    from matplotlib.backends.backend_agg import RendererAgg

    drawn: list[tuple[float, str]] = []

    class _Recorder(RendererAgg):
        def draw_text(self, gc, x, y, s, prop, angle, ismath=False, mtext=None):
            if str(s).strip():
                drawn.append((float(prop.get_size_in_points()), str(s)))

        def draw_tex(self, gc, x, y, s, prop, angle, *, mtext=None):
            self.draw_text(gc, x, y, s, prop, angle, mtext=mtext)

    width, height = fig.get_size_inches() * fig.dpi
    fig.draw(_Recorder(max(1, int(width)), max(1, int(height)), fig.dpi))
    return drawn


def text_record(fig) -> dict | None:
    """The figure's smallest text: ``{"points": size, "text": the text}``, or None when it draws no text."""
    sizes = text_sizes(fig)
    if not sizes:
        return None
    points, text = min(sizes, key=lambda st: st[0])
    return {"points": round(points, 3), "text": " ".join(text.split())[:60]}


def read_record(path: str | os.PathLike) -> tuple[dict | None, float | None, int]:
    """A PNG's text record, its resolution (dots per inch) and its width in pixels.

    Returns
    -------
    (dict or None, float or None, int)
        The record (None when the PNG has none, or it is unreadable), the resolution (None when the PNG
        does not state one) and the width.
    """
    from PIL import Image

    with Image.open(path) as im:
        raw = im.info.get(KEY)
        dpi = im.info.get("dpi")
        width = im.width
    record = None
    if raw:
        try:
            record = json.loads(raw)
            float(record["points"])
        except (ValueError, TypeError, KeyError):
            record = None
    return record, (float(dpi[0]) if dpi else None), width


def shown_points(points: float, dpi: float, png_width: int, shown_width: float) -> float:
    """Text of ``points`` in a PNG ``png_width`` pixels wide saved at ``dpi``, as the page shows it.

    Parameters
    ----------
    points : float
        The text's size in the figure.
    dpi : float
        The PNG's resolution.
    png_width : int
        The PNG's width in pixels.
    shown_width : float
        The width of the image on the page, in CSS pixels.
    """
    return points * dpi * shown_width / (CSS_PX_PER_INCH * png_width)
