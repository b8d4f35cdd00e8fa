"""The course site as a reader sees it: every page in headless Chromium.

Each page must load with no console errors, failed requests or HTTP errors, every
image must decode, every link must reach a page or file of the site (and an anchor
on it), math must be typeset by the bundled MathJax (checked in the rendered DOM),
and the chapter navigation must work by clicking. Screenshots of the home page and
a chapter page, and a log of what each page loaded, go to ``build/browser/``.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

pytestmark = pytest.mark.browser

MATH_TYPESET = "document.documentElement.getAttribute('data-math') === 'typeset'"

# Everything the page shows, for the checks below: links, images, typeset math, and the
# text of rendered Markdown outside code, scripts and MathJax's own nodes (raw TeX left
# there means the math was not typeset).
PAGE_FACTS = """() => {
  const links = Array.from(document.querySelectorAll('a[href]')).map(a => a.href);
  const images = Array.from(document.querySelectorAll('img')).map(img => ({
    src: img.currentSrc || img.src, ok: img.complete && img.naturalWidth > 0}));
  const math = document.querySelectorAll('.MathJax, .MathJax_Display').length;
  const mathErrors = document.querySelectorAll('.MathJax_Error, .noError, merror').length;
  const skip = 'code, pre, script, style, .MathJax, .MathJax_Display, .MathJax_Preview, .MJX_Assistive_MathML';
  const texts = [];
  for (const root of document.querySelectorAll('.jp-RenderedMarkdown')) {
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      if (!node.parentElement.closest(skip)) texts.push(node.textContent);
    }
  }
  const ids = Array.from(document.querySelectorAll('[id]')).map(e => e.id);
  return {links, images, math, mathErrors, text: texts.join(' '), ids};
}"""

RAW_TEX = re.compile(r"\$\$|\\(frac|sum|sigma|log|mathbb|beta|theta|pi|left|right|cdot)\b")


def _expects_math(page_html: str) -> bool:
    """Whether the page's Markdown (outside code) holds $...$ math."""
    text = re.sub(r"<(pre|code|script|style)\b.*?</\1>", "", page_html, flags=re.S)
    return bool(re.search(r"\$[^$\s][^$]*\$", text))


def _site_pages(site_dir: Path) -> list[str]:
    return sorted(p.name for p in site_dir.glob("*.html"))


def visit(browser, url: str) -> tuple[dict, list[str]]:
    """Open ``url`` in a fresh page; return what it shows and every problem it reported."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} ({r.failure})"))
    page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    try:
        page.goto(url, wait_until="load")
        page.wait_for_function(MATH_TYPESET, timeout=60_000)
        facts = page.evaluate(PAGE_FACTS)
    finally:
        context.close()
    return facts, problems


def test_every_page_loads_cleanly_with_links_images_and_math(browser, site_dir, site_url, artifacts):
    pages = _site_pages(site_dir)
    assert "index.html" in pages and len(pages) > 10
    origin = urlsplit(site_url).netloc
    report, failures, external = [], [], set()
    ids_by_page = {}
    for name in pages:
        facts, problems = visit(browser, f"{site_url}/{name}")
        ids_by_page[name] = set(facts["ids"])
        page_html = (site_dir / name).read_text(encoding="utf-8")
        for image in facts["images"]:
            if not image["ok"]:
                problems.append(f"image did not load: {image['src']}")
        for link in facts["links"]:
            parts = urlsplit(link)
            if parts.scheme in ("mailto", "data"):
                continue
            if parts.netloc != origin:
                external.add(link)
                continue
            target = unquote(parts.path.lstrip("/")) or "index.html"
            if not (site_dir / target).is_file():
                problems.append(f"broken link: {link}")
            elif parts.fragment and target.endswith(".html"):
                fragment, decoded = parts.fragment, unquote(parts.fragment)
                ids = ids_by_page.get(target) if target != name else ids_by_page[name]
                if ids is None:
                    raw = (site_dir / target).read_text(encoding="utf-8")
                    ids = {html.unescape(i) for i in re.findall(r'\bid="([^"]*)"', raw)}
                if fragment not in ids and decoded not in ids:
                    problems.append(f"link to a missing anchor: {link}")
        if _expects_math(page_html) and facts["math"] == 0:
            problems.append("the page has $...$ math but nothing was typeset")
        if facts["mathErrors"]:
            problems.append(f"{facts['mathErrors']} math expression(s) failed to typeset")
        raw_tex = RAW_TEX.search(facts["text"])
        if raw_tex:
            start = max(raw_tex.start() - 40, 0)
            problems.append(f"raw TeX left in the text: ...{facts['text'][start:raw_tex.end() + 40]}...")
        report.append(f"{name}: {len(facts['links'])} links, {len(facts['images'])} images, "
                      f"{facts['math']} typeset math, {len(problems)} problem(s)")
        report += [f"    {problem}" for problem in problems]
        failures += [f"{name}: {problem}" for problem in problems]
    report.append(f"external links (not fetched; the checks run offline): {len(external)}")
    report += [f"    {link}" for link in sorted(external)]
    (artifacts / "site-check.txt").write_text("\n".join(report) + "\n", encoding="utf-8")
    assert not failures, "\n".join(failures[:40])
    assert all(urlsplit(link).scheme == "https" for link in external), sorted(external)


def test_navigation_by_clicking(page, site_url):
    page.goto(f"{site_url}/index.html")
    page.click(".course-chapters >> text=02")
    page.wait_for_url("**/02_reward_models.html")
    assert page.locator("h1").first.inner_text().startswith("Chapter 02")
    page.click(".course-tabs >> text=Exercises")
    page.wait_for_url("**/02_reward_models.exercises.html")
    page.click("a[rel=next]")
    page.wait_for_url("**/02_reward_models.solutions.html")
    page.click("a[rel=prev]")
    page.click("a[rel=prev]")
    page.wait_for_url("**/02_reward_models.html")
    page.click(".course-home")
    page.wait_for_url("**/index.html")
    page.click("table >> text=Noisy preferences")  # the course map
    page.wait_for_url("**/03_noisy_preferences.html")
    page.click(".course-chapters >> text=Reproduction")
    page.wait_for_url("**/reproduction.html")
    assert "CRM reproduction" in page.locator("h1").first.inner_text()


def test_screenshots_of_the_home_page_and_a_chapter(page, site_url, artifacts):
    page.goto(f"{site_url}/index.html")
    page.wait_for_function(MATH_TYPESET, timeout=60_000)
    page.screenshot(path=str(artifacts / "site-home.png"), full_page=True)
    page.goto(f"{site_url}/01_bradley_terry.html")
    page.wait_for_function(MATH_TYPESET, timeout=60_000)
    assert page.locator(".MathJax_Display").count() > 0
    page.screenshot(path=str(artifacts / "site-chapter-01.png"))
    figure = page.locator(".jp-OutputArea-output img").first
    figure.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "site-chapter-01-figure.png"))
    for name in ("site-home.png", "site-chapter-01.png", "site-chapter-01-figure.png"):
        assert (artifacts / name).stat().st_size > 10_000, name
