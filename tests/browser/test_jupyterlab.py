"""The guided walkthrough as a learner starts it: Chapter 01 in JupyterLab, run from the UI.

A real ``jupyter lab`` server on a free localhost port (with a token, no browser of
its own, a time limit, always shut down) serves a copy of ``notebooks/01_*.ipynb``
whose outputs are cleared and whose parameters papermill-style select
``profile = "smoke"``. Chromium opens it with the course kernel, runs the first cells
with Shift+Enter up to the first figure, and checks that text output and the figure
appear and nothing failed. The learner's own JupyterLab settings and workspaces are
never touched: the server gets its own settings, workspace and runtime folders.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from course_lib.tooling.notebook_io import KERNEL_DISPLAY_NAME, KERNEL_NAME

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
SERVER_START_LIMIT = 90  # seconds for jupyter lab to answer
SERVER_LIFETIME = 600  # seconds idle before an orphaned kernel, then the server, stops itself
RUN_LIMIT_MS = 240_000  # for the first cells (smoke profile) to produce their figure


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _first_figure_cell(nb) -> int:
    """Index of the first cell whose stored output is a figure."""
    for index, cell in enumerate(nb.cells):
        if any("image/png" in output.get("data", {}) for output in cell.get("outputs", [])):
            return index
    raise AssertionError("the committed Chapter 01 notebook shows no figure")


def _walkthrough_notebook(folder: Path) -> tuple[Path, int]:
    """Chapter 01 with cleared outputs and ``profile = "smoke"`` injected after its parameters cell."""
    source = next((ROOT / "notebooks").glob("01_*.ipynb"))
    nb = nbformat.read(source, as_version=4)
    figure_cell = _first_figure_cell(nb) + 1  # the injected cell comes before it
    parameters = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    injected = nbformat.v4.new_code_cell('# Parameters\nprofile = "smoke"\n', metadata={"tags": ["injected-parameters"]})
    del injected["id"]  # the course's notebooks are nbformat 4.4, without cell ids
    nb.cells.insert(parameters + 1, injected)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    assert nb.metadata["kernelspec"]["name"] == KERNEL_NAME
    path = folder / source.name
    nbformat.write(nb, path)
    return path, figure_cell + 1  # cells to run, the figure cell included


def _lab_settings(folder: Path) -> Path:
    """User settings for this server only: every cell rendered, no news or update checks."""
    settings = {
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                            "checkForUpdates": False},
    }
    for name, values in settings.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values), encoding="utf-8")
    return folder


@pytest.fixture
def lab(tmp_path, artifacts):
    """``(url, token, notebook, cells_to_run)`` of a running JupyterLab; stopped afterwards."""
    work = tmp_path / "work"
    work.mkdir()
    notebook, cells_to_run = _walkthrough_notebook(work)
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ,
               JUPYTERLAB_SETTINGS_DIR=str(_lab_settings(tmp_path / "settings")),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               OMP_NUM_THREADS="1", MPLBACKEND="module://matplotlib_inline.backend_inline")
    log = open(artifacts / "jupyterlab-server.log", "w", encoding="utf-8")
    command = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
        "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
        # Should the test process die without cleaning up: idle kernels are culled, then the
        # server stops itself once it has had no kernel for a while.
        f"--ServerApp.shutdown_no_activity_timeout={SERVER_LIFETIME}",
        f"--MappingKernelManager.cull_idle_timeout={SERVER_LIFETIME}", "--MappingKernelManager.cull_interval=60",
        "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",  # no package index lookups
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # CI containers run as root
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_LIMIT
        while True:
            if server.poll() is not None:
                pytest.fail(f"jupyter lab exited with code {server.returncode}; see {log.name}")
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"jupyter lab did not answer within {SERVER_START_LIMIT} s; see {log.name}")
            time.sleep(0.5)
        yield url, token, notebook, cells_to_run
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)  # the server and the kernels it started
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        log.close()


def test_chapter_01_runs_in_jupyterlab(browser, lab, artifacts):
    url, token, notebook, cells_to_run = lab
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    console = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda error: console.append(f"script error: {error}"))
    try:
        page.goto(f"{url}/lab/tree/{notebook.name}?token={token}", wait_until="domcontentloaded")
        panel = page.locator(".jp-NotebookPanel").first
        panel.wait_for(state="visible", timeout=90_000)
        # The course kernel, by name, started and idle.
        page.locator(".jp-Toolbar-kernelName").first.wait_for(timeout=60_000)
        kernel = page.locator(".jp-Toolbar-kernelName").first
        page.wait_for_function(
            f"() => Array.from(document.querySelectorAll('.jp-Toolbar-kernelName'))"
            f".some(e => e.textContent.includes({json.dumps(KERNEL_DISPLAY_NAME)}))", timeout=60_000)
        page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first.wait_for(timeout=90_000)
        cells = panel.locator(".jp-Notebook .jp-Cell")
        assert cells.count() >= cells_to_run
        assert 'profile = "smoke"' in cells.nth(3).inner_text()  # papermill's injected-parameters cell
        page.screenshot(path=str(artifacts / "jupyterlab-opened.png"))

        # Select the first cell, then Shift+Enter through the cells up to the first figure,
        # as a learner would.
        cells.first.locator(".jp-InputPrompt").click()
        page.keyboard.press("Escape")
        for _ in range(cells_to_run):
            page.keyboard.press("Shift+Enter")
        figure_cell = cells.nth(cells_to_run - 1)
        figure = figure_cell.locator(".jp-OutputArea-output img")
        figure.wait_for(state="visible", timeout=RUN_LIMIT_MS)
        page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first.wait_for(timeout=RUN_LIMIT_MS)
        assert figure.evaluate("img => img.complete && img.naturalWidth > 100")
        figure.scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts / "jupyterlab-chapter-01.png"))

        # Every code cell run so far has an execution count and none failed.
        prompts = [cells.nth(i).locator(".jp-InputPrompt").inner_text() for i in range(cells_to_run)]
        code_prompts = [p for p in prompts if p.strip()]
        assert code_prompts and all(re.fullmatch(r"\[\d+\]:", p.strip()) for p in code_prompts), prompts
        errors = panel.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
        error_text = [errors.nth(i).inner_text() for i in range(errors.count())]
        assert not any("Error" in text or "Traceback" in text for text in error_text), error_text
        text_outputs = panel.locator(".jp-OutputArea-output pre, .jp-OutputArea-output table")
        assert text_outputs.count() > 0
        assert kernel.inner_text().strip() == KERNEL_DISPLAY_NAME
    finally:
        (artifacts / "jupyterlab-console.txt").write_text("\n".join(console) + "\n", encoding="utf-8")
        context.close()
