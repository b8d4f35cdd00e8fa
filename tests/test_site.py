"""The course site builder (`course site`): pages, links, offline assets, atomic swap.

The browser checks of the built site live in tests/browser/ (`make test-browser`).
"""

from __future__ import annotations

import re
import shutil
from html.parser import HTMLParser

import nbformat
import pytest

from course_lib.tooling.cli import main
from course_lib.tooling.site import (
    build_site,
    course_map_summaries,
    discover_chapters,
    notebook_profile,
    readme_section,
    rewrite_links,
)


def anchors(html: str) -> list[dict]:
    """The attributes of every <a> element (attribute order in the HTML does not matter)."""
    found = []

    class Parser(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag == "a":
                found.append(dict(attrs))

    Parser().feed(html)
    return found


@pytest.fixture(scope="module")
def site(root, tmp_path_factory):
    """The real course, built once from the committed notebooks."""
    return build_site(root, output=tmp_path_factory.mktemp("site") / "site")


def test_every_chapter_part_gets_a_page(root, site):
    chapters = discover_chapters(root, root / "notebooks")
    assert len(chapters) == len(list((root / "notebooks").glob("[0-9][0-9]_*.ipynb")))
    expected = {"index.html", "results.html", "reproduction.html"}
    for chapter in chapters:
        expected |= {f"{chapter.stem}.html", f"{chapter.stem}.exercises.html", f"{chapter.stem}.solutions.html"}
    assert set(site.pages) == expected
    assert all((site.path / page).is_file() for page in expected)
    assert (site.path / "notebooks" / "01_bradley_terry.ipynb").is_file()
    assert (site.path / "exercises" / "01_bradley_terry.ipynb").is_file()


def test_pages_load_nothing_from_the_network(site):
    for page in site.pages:
        html = (site.path / page).read_text(encoding="utf-8")
        remote = re.findall(r'<(?:script|link|img)\b[^>]*(?:src|href)="(https?:|//)[^"]*"', html)
        assert not remote, f"{page} loads {remote} from the network"
        assert 'src="_static/mathjax/MathJax.js?config=' in html, page
    assert (site.path / "_static" / "mathjax" / "MathJax.js").is_file()


def test_lesson_page_has_navigation_source_link_and_command(site):
    html = (site.path / "02_reward_models.html").read_text(encoding="utf-8")
    assert 'href="notebooks/02_reward_models.ipynb"' in html
    assert "course run 02 --profile standard" in html
    links = anchors(html)
    assert {"rel": "prev", "href": "01_bradley_terry.solutions.html"}.items() <= \
        next(a for a in links if a.get("rel") == "prev").items()
    assert next(a for a in links if a.get("rel") == "next")["href"] == "02_reward_models.exercises.html"
    current = [a["href"] for a in links if a.get("aria-current") == "page"]
    assert current == ["02_reward_models.html", "02_reward_models.html"]  # chapter bar and the Lesson tab
    assert "data:image/png;base64," in html  # the executed notebook's figures
    exercises = (site.path / "02_reward_models.exercises.html").read_text(encoding="utf-8")
    assert 'href="exercises/02_reward_models.ipynb"' in exercises
    assert "jupyter lab exercises/02_reward_models.ipynb" in exercises


def test_repository_links_point_at_site_pages(root, site):
    chapters = discover_chapters(root, root / "notebooks")
    assert rewrite_links("see [the report](../results/crm_reproduction.md)", chapters) == \
        "see [the report](reproduction.html)"
    assert rewrite_links("[ex](../exercises/03_noisy_preferences.ipynb#task-2)", chapters) == \
        "[ex](03_noisy_preferences.exercises.html#task-2)"
    assert rewrite_links("[arXiv](https://arxiv.org/abs/2505.10597) [x](#top)", chapters) == \
        "[arXiv](https://arxiv.org/abs/2505.10597) [x](#top)"
    assert "../results/crm_reproduction.md" not in (site.path / "05_curriculum.html").read_text(encoding="utf-8")


def test_home_page_has_the_course_map_how_to_start_and_key_results(site, root):
    html = (site.path / "index.html").read_text(encoding="utf-8")
    summaries = course_map_summaries((root / "README.md").read_text(encoding="utf-8"))
    assert set(summaries) >= {"01", "08"}
    assert summaries["01"].split(",")[0] in html
    text = re.sub(r"<[^>]+>", "", html)  # code blocks are split into highlighting spans
    assert "make course" in text and "make test" in text
    assert 'href="results.html"' in html and 'href="reproduction.html"' in html
    headline = readme_section((root / "results" / "crm_reproduction.md").read_text(encoding="utf-8"), "Headline")
    assert "40% flips" in headline and "40% flips" in html
    results = (site.path / "results.html").read_text(encoding="utf-8")
    assert "spearman" in results.lower() and 'src="figures/01_bradley_terry__' in results


def test_profile_is_read_from_the_injected_parameters(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('profile = "standard"\nseed = 0', metadata={"tags": ["parameters"]})]
    assert notebook_profile(nb) == "standard"
    nb.cells.append(nbformat.v4.new_code_cell('profile = "smoke"', metadata={"tags": ["injected-parameters"]}))
    assert notebook_profile(nb) == "smoke"
    assert notebook_profile(nbformat.v4.new_notebook()) is None


def test_a_failed_build_leaves_the_previous_site_in_place(root, site, tmp_path):
    output = tmp_path / "site"
    shutil.copytree(site.path, output)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "01_bradley_terry.ipynb").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="01_bradley_terry.ipynb"):
        build_site(root, output=output, source=broken)
    assert sorted(p.name for p in output.iterdir()) == sorted(p.name for p in site.path.iterdir())
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left behind


def test_cli_builds_from_a_profile_folder_and_reports_errors(root, tmp_path, capsys):
    source = tmp_path / "smoke"
    source.mkdir()
    nb = nbformat.read(root / "notebooks" / "01_bradley_terry.ipynb", as_version=4)
    nb.cells.insert(3, nbformat.v4.new_code_cell('profile = "smoke"', metadata={"tags": ["injected-parameters"]}))
    nbformat.write(nb, source / "01_bradley_terry.ipynb")
    assert main(["site", "--source", str(source), "--output", str(tmp_path / "out")]) == 0
    html = (tmp_path / "out" / "01_bradley_terry.html").read_text(encoding="utf-8")
    assert "course run 01 --profile smoke" in html
    assert not (tmp_path / "out" / "02_reward_models.html").exists()
    assert main(["site", "--source", str(tmp_path / "missing")]) == 2
    assert "notebook folder not found" in capsys.readouterr().err
