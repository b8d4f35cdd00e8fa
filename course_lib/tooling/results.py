"""Record a notebook's key results so that batch runs can report them.

A notebook calls :func:`record_result` for each number a reader should see in the
course summary, and :func:`record_figure` for each plot. Both display normally in
JupyterLab and also attach a machine-readable copy to the cell output, which
``course run`` collects from the executed notebook into ``build/report.md``
(the same idea as scrapbook's ``glue``).

Defined in Chapter 01 (used by every chapter).
"""

from __future__ import annotations

import base64
import io
import json
import math
import numbers

RESULT_MIME = "application/vnd.reward-course.result+json"
FIGURE_METADATA_KEY = "reward_course_figure"


def _plain(value):
    """Convert numpy / torch scalars to JSON-friendly Python values."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        if not math.isfinite(value):
            return str(value)
        return value
    raise TypeError(
        f"record_result: value of type {type(value).__name__} is not a number, bool or "
        "string; record one scalar per call"
    )


def format_value(value) -> str:
    """Human-readable form of a recorded value (4 significant digits for floats)."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def record_result(name: str, value, description: str = "") -> None:
    """Show ``name = value`` and record it for the course summary report.

    ``name`` is a short identifier (``spearman_recovered_vs_true``), ``value`` a
    scalar, ``description`` one sentence saying what was measured.
    """
    from IPython.display import display

    if not name or not isinstance(name, str):
        raise ValueError("record_result: 'name' must be a non-empty string")
    payload = {"name": name, "value": _plain(value), "description": description}
    text = f"{name} = {format_value(payload['value'])}"
    if description:
        text += f"   ({description})"
    display({RESULT_MIME: payload, "text/plain": text}, raw=True)


def record_figure(name: str, fig, caption: str = "") -> None:
    """Display a matplotlib figure and mark it for the course summary report."""
    from IPython.display import display

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    png = base64.b64encode(buffer.getvalue()).decode("ascii")
    display(
        {"image/png": png, "text/plain": f"<figure {name}>"},
        raw=True,
        metadata={FIGURE_METADATA_KEY: {"name": name, "caption": caption}},
    )
    import matplotlib.pyplot as plt

    plt.close(fig)


def results_from_outputs(cells) -> tuple[list[dict], list[dict]]:
    """Collect recorded results and figures from executed notebook cells.

    Returns ``(results, figures)``; each figure is ``{"name", "caption", "png"}``
    with ``png`` as base64 text.
    """
    results, figures = [], []
    for cell in cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if RESULT_MIME in data:
                payload = data[RESULT_MIME]
                if isinstance(payload, str):
                    payload = json.loads(payload)
                results.append(payload)
            meta = output.get("metadata", {}).get(FIGURE_METADATA_KEY)
            if meta and "image/png" in data:
                figures.append({**meta, "png": data["image/png"]})
    return results, figures
