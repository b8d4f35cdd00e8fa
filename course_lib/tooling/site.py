"""The course website: static HTML pages rendered from the executed notebooks.

    course site [--source FOLDER] [--output build/site]

One page per chapter part (lesson, exercises, solutions), a home page (the course
map and how to start, taken from the README), a results page (every chapter's
recorded results and figures, as in ``course run``'s ``report.md``) and the CRM
reproduction report. Pages are rendered by nbconvert's ``HTMLExporter`` with the
course template in ``site_template/course`` (JupyterLab's template plus navigation).

Nothing is fetched at build or view time: math is typeset by the MathJax 2 copy
that the ``jupyter-server-mathjax`` package ships, copied into ``_static/``, and
the template drops the CDN scripts (require.js, mermaid) that the stock template
loads. The site is written to a temporary folder and swapped in at the end, so an
interrupted build leaves the previous site untouched.
"""

from __future__ import annotations

import ast
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from ..engine.files import atomic_directory
from .notebook_io import read_notebook

COURSE_TITLE = "Reward Modeling & Alignment"
TEMPLATE_DIR = Path(__file__).with_name("site_template")
MATHJAX_URL = "_static/mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"
CHAPTER_PATTERN = re.compile(r"^(\d\d)_[a-z0-9_]+$")
# Each chapter part: its tab label and the repository folder its notebook lives in.
PARTS = {"lesson": ("Lesson", "notebooks"), "exercises": ("Exercises", "exercises"), "solutions": ("Solutions", "solutions")}


@dataclass
class Chapter:
    number: str
    stem: str
    title: str
    summary: str
    sources: dict[str, Path]  # part ("lesson", "exercises", "solutions") -> notebook

    def href(self, part: str = "lesson") -> str:
        return f"{self.stem}.html" if part == "lesson" else f"{self.stem}.{part}.html"


@dataclass
class SiteBuild:
    path: Path
    pages: list[str] = field(default_factory=list)
    seconds: float = 0.0


def notebook_profile(nb) -> str | None:
    """The ``profile`` a notebook ran with: papermill's injected cell wins over the parameters cell."""
    for tag in ("injected-parameters", "parameters"):
        for cell in nb.cells:
            if cell.cell_type == "code" and tag in cell.metadata.get("tags", []):
                try:
                    tree = ast.parse(cell.source)
                except SyntaxError:
                    continue
                for node in tree.body:
                    if (isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "profile" for t in node.targets)
                            and isinstance(node.value, ast.Constant)):
                        return str(node.value.value)
    return None


def readme_section(readme: str, heading: str) -> str:
    """The body of the README's ``## heading`` section (without the heading line)."""
    match = re.search(rf"^## {re.escape(heading)}\s*$(.*?)(?=^## |\Z)", readme, flags=re.M | re.S)
    return match.group(1).strip() if match else ""


def course_map_summaries(readme: str) -> dict[str, str]:
    """Chapter number -> the README course map's "you leave able to" column."""
    summaries = {}
    for line in readme_section(readme, "Course map").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and re.fullmatch(r"\d\d", cells[0]):
            summaries[cells[0]] = cells[-1]
    return summaries


def _title(nb, fallback: str) -> str:
    """The notebook's first heading without its "Chapter NN —" prefix."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return re.sub(r"^Chapter \d+\s*[—-]\s*", "", line[2:].strip())
    return fallback


def discover_chapters(root: Path, source: Path) -> list[Chapter]:
    """Chapters whose lesson is in ``source``, with their exercises and solutions from ``root``."""
    readme = (root / "README.md").read_text(encoding="utf-8") if (root / "README.md").is_file() else ""
    summaries = course_map_summaries(readme)
    chapters = []
    for lesson in sorted(source.glob("*.ipynb")):
        match = CHAPTER_PATTERN.match(lesson.stem)
        if not match:
            continue
        sources = {"lesson": lesson}
        for part, (_, folder) in PARTS.items():
            if part != "lesson" and (root / folder / lesson.name).is_file():
                sources[part] = root / folder / lesson.name
        title = _title(read_notebook(lesson), lesson.stem)
        chapters.append(Chapter(match.group(1), lesson.stem, title, summaries.get(match.group(1), ""), sources))
    if not chapters:
        raise FileNotFoundError(f"no chapter notebooks (NN_name.ipynb) found in {source}")
    return chapters


def site_link(target: str, chapters: list[Chapter]) -> str:
    """Where a repository-relative link in a notebook points on the site (unchanged if it is not ours)."""
    if re.match(r"^[a-z]+:|^#", target):
        return target
    path, _, anchor = target.partition("#")
    parts = [p for p in Path(path).parts if p not in ("..", ".")]
    relative = "/".join(parts)
    pages = {"README.md": "index.html", "results/crm_reproduction.md": "reproduction.html"}
    for chapter in chapters:
        pages[f"{chapter.stem}.ipynb"] = pages[f"notebooks/{chapter.stem}.ipynb"] = chapter.href()
        for part, (_, folder) in PARTS.items():
            if part != "lesson":
                pages[f"{folder}/{chapter.stem}.ipynb"] = chapter.href(part)
    page = pages.get(relative)
    if page is None:
        return target
    return f"{page}#{anchor}" if anchor else page


def rewrite_links(markdown: str, chapters: list[Chapter]) -> str:
    """Point Markdown links at site pages instead of repository files."""
    return re.sub(r"\]\(([^)\s]+)\)", lambda m: f"]({site_link(m.group(1), chapters)})", markdown)


def _markdown_notebook(title: str, sections: list[str]):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(text) for text in sections if text.strip()]
    nb.metadata["title"] = title
    return nb


def _home_notebook(root: Path, chapters: list[Chapter], profile: str, has_reproduction: bool):
    readme = (root / "README.md").read_text(encoding="utf-8") if (root / "README.md").is_file() else ""
    intro = readme.split("\n## ", 1)[0].strip() or f"# {COURSE_TITLE}"
    rows = ["| # | chapter | you leave able to | exercises | solutions |", "|---|---|---|---|---|"]
    for chapter in chapters:
        parts = [f"[{part}]({chapter.href(part)})" if part in chapter.sources else ""
                 for part in ("exercises", "solutions")]
        rows.append(f"| {chapter.number} | [{chapter.title}]({chapter.href()}) | {chapter.summary} | {' | '.join(parts)} |")
    chapters_md = "## Chapters\n\nEach chapter is a lesson notebook (shown here with the outputs of its " \
                  f"`{profile}` run), exercises and their solutions.\n\n" + "\n".join(rows)
    how_to = {heading: readme_section(readme, heading) for heading in ("The two commands", "Opening the notebooks")}
    start = "\n\n".join(f"### {heading}\n\n{body}" for heading, body in how_to.items() if body)
    results = ["## Key results", "",
               f"- [Every chapter's recorded results and figures](results.html) (profile `{profile}`)."]
    if has_reproduction:
        report = (root / "results" / "crm_reproduction.md").read_text(encoding="utf-8")
        headline = readme_section(report, "Headline")
        results += ["- [The CRM reproduction](reproduction.html): reward models trained on noisy labels, "
                    "scored on MiniRewardBench. Its headline:", "", headline]
    sections = [rewrite_links(intro, chapters), chapters_md, "## How to start\n\n" + rewrite_links(start, chapters),
                "\n".join(results)]
    return _markdown_notebook(COURSE_TITLE, sections)


def _results_notebook(chapters: list[Chapter], profile: str, figures_dir: Path):
    from course_lib.tooling.results import results_from_outputs

    from .execute import results_markdown

    sections = [f"# Key results\n\nWhat each chapter's `{profile}` run recorded with `record_result` and "
                "`record_figure`: the numbers and figures of `course run`'s `report.md`. Every number here comes "
                "from the executed notebook linked in the heading."]
    for chapter in chapters:
        results, figures = results_from_outputs(read_notebook(chapter.sources["lesson"]).cells)
        lines = [f"## [{chapter.number} — {chapter.title}]({chapter.href()})"]
        lines += results_markdown(chapter.stem, results, figures, figures_dir) or ["", "No recorded results."]
        sections.append("\n".join(lines))
    return _markdown_notebook("Key results", sections)


def _reproduction_notebook(root: Path, chapters: list[Chapter], figures_dir: Path):
    report = (root / "results" / "crm_reproduction.md").read_text(encoding="utf-8")
    figure = root / "results" / "crm_reproduction.png"
    if figure.is_file() and "crm_reproduction.png" not in report:
        shutil.copyfile(figure, figures_dir / figure.name)
        title, _, rest = report.partition("\n")
        report = f"{title}\n\n![The CRM reproduction: accuracy by method and noise](figures/{figure.name})\n{rest}"
    return _markdown_notebook("CRM reproduction", [rewrite_links(report, chapters)])


def _page_notebook(chapter: Chapter, part: str, chapters: list[Chapter]):
    nb = read_notebook(chapter.sources[part])
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = rewrite_links(cell.source, chapters)
    nb.metadata["title"] = f"{chapter.number} {chapter.title}" + ("" if part == "lesson" else f" — {part}")
    return nb


def _exporter():
    from nbconvert import HTMLExporter

    return HTMLExporter(template_name="course", extra_template_basedirs=[str(TEMPLATE_DIR)])


def _mathjax_folder() -> Path:
    try:
        import jupyter_server_mathjax
    except ImportError as error:  # a FileNotFoundError, so that `course site` reports it in one line
        raise FileNotFoundError("the course site needs the jupyter-server-mathjax package for offline math; "
                           "run 'make setup' (or pip install jupyter-server-mathjax)") from error
    return Path(jupyter_server_mathjax.__file__).parent / "static"


def build_site(root: Path, output: Path | None = None, source: Path | None = None, on_page=None) -> SiteBuild:
    """Render the course into ``output`` (default ``build/site``) from the lesson notebooks in ``source``.

    ``source`` defaults to the committed ``notebooks/`` (executed with the standard
    profile); pass ``build/<profile>`` after ``course run --profile <profile>``.
    ``on_page(name)`` is called after each page is written.
    """
    started = time.monotonic()
    root = Path(root)
    source = Path(source) if source else root / "notebooks"
    output = Path(output) if output else root / "build" / "site"
    if not source.is_dir():
        raise FileNotFoundError(f"notebook folder not found: {source}")
    chapters = discover_chapters(root, source)
    profiles = {notebook_profile(read_notebook(c.sources["lesson"])) for c in chapters}
    profile = "/".join(sorted(p for p in profiles if p)) or "default"
    has_reproduction = (root / "results" / "crm_reproduction.md").is_file()
    build = SiteBuild(path=output)
    with atomic_directory(output) as staging:
        shutil.copytree(_mathjax_folder(), staging / "_static" / "mathjax")
        figures_dir = staging / "figures"
        figures_dir.mkdir()
        for chapter in chapters:
            for part, path in chapter.sources.items():
                folder = PARTS[part][1]
                (staging / folder).mkdir(exist_ok=True)
                shutil.copyfile(path, staging / folder / f"{chapter.stem}.ipynb")

        pages = [("index.html", "home", None, _home_notebook(root, chapters, profile, has_reproduction))]
        for chapter in chapters:
            pages += [(chapter.href(part), part, chapter, _page_notebook(chapter, part, chapters))
                      for part in PARTS if part in chapter.sources]
        pages.append(("results.html", "results", None, _results_notebook(chapters, profile, figures_dir)))
        if has_reproduction:
            pages.append(("reproduction.html", "reproduction", None, _reproduction_notebook(root, chapters, figures_dir)))

        exporter = _exporter()
        for index, (name, kind, chapter, nb) in enumerate(pages):
            site = _page_context(kind, chapter, chapters, profile, has_reproduction)
            if index > 0:
                site["prev"] = {"href": pages[index - 1][0], "title": pages[index - 1][3].metadata["title"]}
            if index + 1 < len(pages):
                site["next"] = {"href": pages[index + 1][0], "title": pages[index + 1][3].metadata["title"]}
            body, _ = exporter.from_notebook_node(nb, resources={"site": site})
            (staging / name).write_text(body, encoding="utf-8")
            build.pages.append(name)
            if on_page:
                on_page(name)
    build.seconds = time.monotonic() - started
    return build


def _page_context(kind: str, chapter: Chapter | None, chapters: list[Chapter], profile: str,
                  has_reproduction: bool) -> dict:
    """What the template needs besides the notebook (``resources.site``); ``kind`` is the chapter part on chapter pages."""
    site = {"course_title": COURSE_TITLE, "mathjax_url": MATHJAX_URL, "has_reproduction": has_reproduction,
            "source_note": f"the executed notebooks of the {profile} profile", "kind": kind,
            "chapters": [{"number": c.number, "title": c.title, "href": c.href(), "active": c is chapter}
                         for c in chapters],
            "tabs": [], "notebook_href": None, "prev": None, "next": None}
    if chapter is None:
        return site
    site["tabs"] = [{"label": label, "href": chapter.href(part), "active": part == kind}
                    for part, (label, _) in PARTS.items() if part in chapter.sources]
    site["notebook_href"] = f"{PARTS[kind][1]}/{chapter.stem}.ipynb"
    if kind == "lesson":
        site.update(command_label="Reproduce", command=f"course run {chapter.number} --profile {profile.split('/')[0]}",
                    profile_note=f"Outputs below: profile {profile}.")
    else:
        site.update(command_label="Work on it", command=f"jupyter lab {site['notebook_href']}",
                    profile_note="Graded with: course grade SUBMISSIONS" if kind == "exercises"
                    else "The worked answers; graded exercises are checked against these.")
    return site
