"""Run course notebooks with papermill and write a summary report.

``course run`` executes each notebook with its parameters (``profile`` plus any
``-p name value``), writes the executed copy to ``build/<profile>/``, and
collects what each notebook recorded with :func:`course_lib.tooling.results.record_result`
and :func:`course_lib.tooling.results.record_figure` into ``build/<profile>/report.md``
and ``results.json``. A cell that runs longer than the per-cell limit
(:data:`CELL_TIMEOUTS`, or ``--cell-timeout``) fails its notebook; the batch goes on.
"""

from __future__ import annotations

import ast
import base64
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import papermill
from jupyter_client.kernelspec import KernelSpecManager
from nbclient.exceptions import CellTimeoutError

from ..engine.files import write_bytes_atomic, write_text_atomic
from .results import format_value, results_from_outputs
from .notebook_io import (
    KERNEL_NAME,
    parameters_cell_index,
    read_notebook,
    strip_progress_bars,
)


# Seconds one cell may run before its notebook fails, per profile. A limit is there to end
# a hung cell, not to hurry a slow one, so each sits well above the slowest cell measured:
# - smoke: a whole chapter takes at most about two minutes on 2 CPU cores, so 5 minutes for
#   one cell only trips on a hang (or a smoke profile that stopped being small).
# - standard: the slowest cell is Chapter 05's reproduction grid, about 22 minutes on 2 CPU
#   threads (results/crm_reproduction.csv, seed 0); an hour leaves room for a slower laptop.
# - full: GPU scale, not timed on every GPU; 6 hours is far beyond any cell we expect and
#   still ends a hung overnight batch by the morning.
CELL_TIMEOUTS = {"smoke": 300, "standard": 3600, "full": 6 * 3600}


def cell_timeout_for(profile: str, override: float | None = None) -> float | None:
    """The per-cell limit in seconds: ``override`` if given (0: no limit), else the profile's default."""
    if override is None:
        return CELL_TIMEOUTS[profile]
    if override < 0:
        raise ValueError(f"the per-cell time limit must be >= 0 seconds (0: no limit), got {override:g}")
    return override or None


def available_kernel() -> str:
    """The course kernel when it is registered (``make setup`` does it), else ``python3``."""
    return KERNEL_NAME if KERNEL_NAME in KernelSpecManager().find_kernel_specs() else "python3"


def parse_parameter(text: str):
    """``"0.4" -> 0.4``, ``"3" -> 3``, ``"True" -> True``, ``"[1, 2]" -> [1, 2]``; anything else stays a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def declared_parameters(path: Path) -> set[str]:
    """Names assigned in the notebook's ``parameters`` cell."""
    nb = read_notebook(path)
    index = parameters_cell_index(nb)
    if index is None:
        raise ValueError(f"{path.name}: no cell is tagged 'parameters'; papermill cannot set its knobs")
    names = set()
    for node in ast.parse(nb.cells[index].source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


@dataclass
class NotebookRun:
    notebook: str
    output: str
    parameters: dict
    seconds: float = 0.0
    ok: bool = True
    error: str = ""
    results: list[dict] = field(default_factory=list)
    figures: list[dict] = field(default_factory=list)


def _cell_label(number, source: str) -> str:
    """``cell 4 (`train(model)`)``: the cell's execution count and its first non-blank line."""
    first_line = next((line for line in source.splitlines() if line.strip()), "")
    return f"cell {number} (`{first_line.strip()[:80]}`)"


def _running_cell(partial: Path):
    """The cell that was running when execution stopped: the last code cell papermill started."""
    if not partial.exists():
        return None
    started = [cell for cell in read_notebook(partial).cells
               if cell.cell_type == "code" and cell.metadata.get("papermill", {}).get("start_time")]
    return started[-1] if started else None


def _failure_message(path: Path, error: Exception, partial: Path, cell_timeout: float | None) -> str:
    if isinstance(error, papermill.PapermillExecutionError):
        return f"{path.name} failed in {_cell_label(error.exec_count, error.source)}: {error.ename}: {error.evalue}"
    if isinstance(error, CellTimeoutError):
        cell = _running_cell(partial)
        where = _cell_label(cell.execution_count, cell.source) if cell else "a cell"
        if not cell_timeout:  # no per-cell limit was set: nbclient's own wait (for output) ran out
            return f"{path.name} timed out in {where}: {str(error).splitlines()[0]}"
        return (
            f"{path.name} timed out in {where}: still running after the per-cell limit of {cell_timeout:g} s; "
            f"if the cell is slow rather than hung, raise the limit with --cell-timeout SECONDS (0: no limit)"
        )
    return f"{path.name} failed: {type(error).__name__}: {error}"


def run_notebook(path: Path, output_dir: Path, parameters: dict, kernel_name: str, log_output: bool = False,
                 cell_timeout: float | None = None) -> NotebookRun:
    """Execute one notebook; the executed copy is written atomically to ``output_dir``.

    ``cell_timeout``: seconds any one cell may run (``None``: no limit). A cell that
    fails or times out ends the run with ``ok=False`` and a message naming the cell;
    the notebook executed so far is still written.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    output = output_dir / path.name
    partial = output_dir / f".{path.stem}.partial.ipynb"
    run = NotebookRun(notebook=path.name, output=str(output), parameters=parameters)
    started = time.monotonic()
    try:
        papermill.execute_notebook(
            str(path),
            str(partial),
            parameters=parameters,
            kernel_name=kernel_name,
            cwd=str(path.parent),
            progress_bar=False,
            log_output=log_output,
            execution_timeout=cell_timeout,
        )
    except Exception as error:  # papermill wraps cell errors; anything else is reported the same way
        run.ok, run.error = False, _failure_message(path, error, partial, cell_timeout)
    run.seconds = round(time.monotonic() - started, 1)
    if partial.exists():
        executed = read_notebook(partial)
        run.results, run.figures = results_from_outputs(executed.cells)
        partial.replace(output)
    return run


def run_course(
    notebooks: list[Path],
    output_dir: Path,
    profile: str,
    extra_parameters: dict,
    kernel_name: str | None = None,
    log_output: bool = False,
    on_start=None,
    cell_timeout: float | None = None,
) -> list[NotebookRun]:
    """Run notebooks in order; a parameter is passed only to notebooks that declare it.

    ``cell_timeout``: seconds any one cell may run; ``None`` takes the profile's
    default from :data:`CELL_TIMEOUTS`, ``0`` means no limit. A failed or timed-out
    notebook is reported FAILED and the next one still runs.
    """
    kernel_name = kernel_name or available_kernel()
    cell_timeout = cell_timeout_for(profile, cell_timeout)
    declared = {path: declared_parameters(path) for path in notebooks}
    unknown = [name for name in extra_parameters if not any(name in names for names in declared.values())]
    if unknown:
        known = sorted(set().union(*declared.values()))
        raise ValueError(f"no selected notebook has a parameter named {', '.join(unknown)}; known: {', '.join(known)}")
    runs = []
    for path in notebooks:
        parameters = {"profile": profile, **{k: v for k, v in extra_parameters.items() if k in declared[path]}}
        if on_start:
            on_start(path, parameters)
        runs.append(run_notebook(path, output_dir, parameters, kernel_name, log_output, cell_timeout))
    write_report(runs, output_dir, profile)
    return runs


def _table_cell(text: str) -> str:
    """Text safe inside a Markdown table cell (pipes escaped, one line)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def results_markdown(stem: str, results: list[dict], figures: list[dict], figures_dir: Path) -> list[str]:
    """Markdown lines for one notebook's recorded results (a table) and figures.

    Each figure is written to ``figures_dir`` as ``<stem>__<name>.png`` and linked
    as ``figures/<file>``, so the Markdown must sit next to ``figures_dir``.
    Shared by ``report.md`` and the course site's results page.
    """
    lines = []
    if results:
        lines += ["", "| result | value | what it measures |", "|---|---|---|"]
        lines += [f"| `{r['name']}` | {format_value(r['value'])} | {_table_cell(r.get('description', ''))} |" for r in results]
    for figure in figures:
        name = f"{stem}__{figure['name']}.png"
        write_bytes_atomic(figures_dir / name, base64.b64decode(figure["png"]))
        lines += ["", f"![{figure.get('caption') or figure['name']}](figures/{name})"]
        if figure.get("caption"):
            lines += ["", f"*{figure['caption']}*"]
    return lines


def write_report(runs: list[NotebookRun], output_dir: Path, profile: str) -> Path:
    """``report.md`` (results tables and figures) and ``results.json`` next to the executed notebooks."""
    figures_dir = output_dir / "figures"
    lines = [f"# Course run: profile `{profile}`", ""]
    lines += ["| notebook | status | seconds |", "|---|---|---|"]
    lines += [f"| {r.notebook} | {'ok' if r.ok else 'FAILED'} | {r.seconds:g} |" for r in runs]
    for run in runs:
        lines += ["", f"## {run.notebook}", ""]
        lines.append("Parameters: " + ", ".join(f"`{k}={v!r}`" for k, v in run.parameters.items()))
        if run.error:
            lines += ["", f"**Error:** {run.error}"]
        lines += results_markdown(Path(run.notebook).stem, run.results, run.figures, figures_dir)
    report = output_dir / "report.md"
    write_text_atomic(report, "\n".join(lines) + "\n")
    summary = [
        {k: v for k, v in vars(r).items() if k != "figures"} | {"figures": [f["name"] for f in r.figures]} for r in runs
    ]
    write_text_atomic(output_dir / "results.json", json.dumps({"profile": profile, "notebooks": summary}, indent=2) + "\n")
    return report


def normalize_executed(nb) -> None:
    """Drop what churns between runs (timings, kernel versions, progress bars) and number code cells 1, 2, ...

    nbval needs an execution count on every cell whose output it checks; numbering
    them in order makes the stored notebook identical from one refresh to the next.
    """
    nb.metadata.pop("papermill", None)
    nb.metadata.pop("widgets", None)
    nb.metadata["language_info"] = {"name": "python"}
    count = 0
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("papermill", None)
        if cell.cell_type == "code":
            count += 1
            cell.execution_count = count
            cell.outputs = strip_progress_bars(cell.outputs)
            for output in cell.outputs:
                if "execution_count" in output:
                    output["execution_count"] = count


def refresh_notebook(path: Path, kernel_name: str | None = None,
                     cell_timeout: float | None = CELL_TIMEOUTS["standard"]) -> float:
    """Re-execute a committed notebook with its default parameters and store its outputs.

    This is how maintainers update the outputs that readers see and nbval checks.
    Returns the wall time in seconds. The file is replaced only if every cell ran.
    ``cell_timeout``: seconds any one cell may run (``None``: no limit); the default
    parameters are the standard profile's, and so is the default limit.
    """
    from nbclient import NotebookClient

    from .notebook_io import write_notebook

    nb = read_notebook(path)
    started = time.monotonic()
    NotebookClient(
        nb, kernel_name=kernel_name or available_kernel(), timeout=cell_timeout, resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    normalize_executed(nb)
    write_notebook(nb, path)
    return time.monotonic() - started
