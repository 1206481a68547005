"""The gallery page's static files, read as text: the elements the scripts and the browser
tests rely on exist, and nothing in them could run a prompt as code or fetch from
another site (the server's content security policy would block inline script and
style anyway; these checks find it before a browser does)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import pytest

STATIC = Path(str(resources.files("speech2image.gallery") / "static"))
SCRIPTS = sorted(STATIC.glob("*.js"))

# The DOM contract (common.md): ids present in index.html before any script runs.
CONTRACT_IDS = (
    "search",
    "grid",
    "empty",
    "detail",
    "detail-image",
    "detail-prompt",
    "detail-meta",
    "detail-download",
    "detail-favourite",
    "detail-delete",
    "detail-close",
    "toast",
    "open-trash",
    "trash",
    "empty-trash",
    "talk-panel",
    "talk",
    "prompt-form",
    "prompt-input",
    "talk-status",
    "live-state",
    "requests",
)
# What would put untrusted text into the page as markup, or run text as code.
MARKUP_SINKS = (
    re.compile(r"\.innerHTML\b"),
    re.compile(r"\.outerHTML\s*="),
    re.compile(r"insertAdjacentHTML"),
    re.compile(r"document\.write"),
    re.compile(r"\beval\s*\("),
    re.compile(r"new\s+Function\b"),
    re.compile(r"setTimeout\(\s*['\"`]"),
    re.compile(r"setInterval\(\s*['\"`]"),
)


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    text: str = ""


class Page(HTMLParser):
    """Every element of the page, in order, with its attributes (and the text of
    script and style elements)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self._raw: Element | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {name: value or "" for name, value in attrs})
        self.elements.append(element)
        self._raw = element if tag in ("script", "style") else None

    def handle_endtag(self, tag: str) -> None:
        self._raw = None

    def handle_data(self, data: str) -> None:
        if self._raw is not None:
            self._raw.text += data

    def by_id(self) -> dict[str, Element]:
        return {e.attrs["id"]: e for e in self.elements if "id" in e.attrs}

    def tagged(self, tag: str) -> list[Element]:
        return [e for e in self.elements if e.tag == tag]


@pytest.fixture(scope="module")
def page() -> Page:
    parsed = Page()
    parsed.feed((STATIC / "index.html").read_text(encoding="utf-8"))
    parsed.close()
    return parsed


def test_the_page_has_every_element_of_the_dom_contract(page: Page) -> None:
    ids = [e.attrs["id"] for e in page.elements if "id" in e.attrs]
    assert sorted({i for i in ids if ids.count(i) > 1}) == [], "ids must be unique"
    missing = [name for name in CONTRACT_IDS if name not in page.by_id()]
    assert missing == []


def test_contract_elements_are_the_kind_the_tests_and_assistive_tools_expect(page: Page) -> None:
    by_id = page.by_id()
    assert (by_id["search"].tag, by_id["search"].attrs.get("type")) == ("input", "search")
    dialog = by_id["detail"].attrs
    assert (dialog.get("role"), dialog.get("aria-modal")) == ("dialog", "true")
    assert "hidden" in dialog, "the detail view starts closed"
    assert "hidden" in by_id["trash"].attrs, "the trash panel starts closed"
    assert by_id["detail-meta"].tag == "dl"
    assert by_id["detail-image"].tag == "img"
    assert by_id["detail-download"].tag == "a"
    assert "download" in by_id["detail-download"].attrs
    assert by_id["detail-favourite"].attrs.get("aria-pressed") == "false"
    assert by_id["talk-panel"].attrs.get("data-talk") in ("on", "off")
    assert by_id["prompt-form"].tag == "form"
    assert by_id["prompt-input"].tag == "input"
    assert by_id["requests"].tag in ("ol", "ul")
    assert by_id["live-state"].attrs.get("aria-live") == "polite"
    buttons = ("detail-favourite", "detail-delete", "detail-close", "open-trash", "empty-trash")
    assert {by_id[name].tag for name in (*buttons, "talk")} == {"button"}


def test_every_button_says_what_it_does_and_never_submits_by_accident(page: Page) -> None:
    for button in page.tagged("button"):
        assert button.attrs.get("type") in ("button", "submit"), button.attrs
    submits = [b for b in page.tagged("button") if b.attrs["type"] == "submit"]
    assert len(submits) == 1, "only the prompt form submits"
    assert all("alt" in img.attrs for img in page.tagged("img"))


def test_no_inline_script_style_or_event_handler(page: Page) -> None:
    assert page.tagged("style") == [], "styles belong in /static/style.css"
    assert page.tagged("script"), "the page has scripts to check"
    for script in page.tagged("script"):
        assert script.text.strip() == "", "inline script is blocked by the CSP"
        assert script.attrs.get("src", "").startswith("/static/"), script.attrs
        assert "defer" in script.attrs, "scripts run after the page is parsed"
    for element in page.elements:
        handlers = [name for name in element.attrs if name.startswith("on")]
        assert handlers == [], f"<{element.tag}> has inline handlers {handlers}"
        assert "style" not in element.attrs, f"<{element.tag}> has a style attribute"
        for name in ("href", "src", "action"):
            assert not element.attrs.get(name, "").lower().startswith("javascript:")


def test_the_page_loads_only_files_that_ship_in_order(page: Page) -> None:
    sheets = [e.attrs["href"] for e in page.tagged("link") if e.attrs.get("rel") == "stylesheet"]
    scripts = [e.attrs["src"] for e in page.tagged("script")]
    assert sheets == ["/static/style.css"]
    for url in (*sheets, *scripts):
        assert (STATIC / url.removeprefix("/static/")).is_file(), f"{url} is not in the package"
    names = [url.removeprefix("/static/") for url in scripts]
    assert names[0] == "common.js", "the shared helpers load first"
    assert names[-1] == "app.js", "app.js starts the page, after the parts it uses"
    assert sorted(names) == [p.name for p in SCRIPTS], "every script in static/ is loaded"


def test_phone_layout_and_reader_preferences(page: Page) -> None:
    viewport = [e for e in page.tagged("meta") if e.attrs.get("name") == "viewport"]
    assert len(viewport) == 1
    assert "width=device-width" in viewport[0].attrs["content"]
    assert page.tagged("html")[0].attrs.get("lang")
    css = (STATIC / "style.css").read_text(encoding="utf-8")
    assert "repeat(auto-fill, minmax(140px, 1fr))" in css
    assert "@media (max-width: 700px)" in css
    assert "prefers-color-scheme: dark" in css
    assert "prefers-reduced-motion: reduce" in css


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_never_turn_text_into_markup_or_code(script: Path) -> None:
    source = script.read_text(encoding="utf-8")
    found = [p.pattern for p in MARKUP_SINKS if p.search(source)]
    assert found == [], f"{script.name} uses {found}: build nodes with textContent instead"
    assert source.lstrip().startswith("//"), "a script starts by saying what it is for"
    assert "'use strict';" in source


def test_nothing_is_fetched_from_another_site() -> None:
    for path in sorted(STATIC.iterdir()):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"https?://|['\"(]//", text), f"{path.name} names another site"
    css = (STATIC / "style.css").read_text(encoding="utf-8")
    assert "@import" not in css
    urls = re.findall(r"url\(\s*['\"]?([^)'\"]*)", css)
    assert all(url.startswith("data:") for url in urls), urls


def test_scripts_look_up_only_elements_the_page_has(page: Page) -> None:
    wanted: set[str] = set()
    for script in SCRIPTS:
        source = script.read_text(encoding="utf-8")
        wanted |= set(re.findall(r"""\$\(\s*['"]#([\w-]+)['"]\s*\)""", source))
        wanted |= set(re.findall(r"""getElementById\(\s*['"]([\w-]+)['"]\s*\)""", source))
    assert len(wanted) > len(CONTRACT_IDS) // 2, "the look-ups were not found at all"
    assert sorted(wanted - set(page.by_id())) == []


def test_the_scripts_call_the_api_routes_of_the_contract() -> None:
    source = "\n".join(p.read_text(encoding="utf-8") for p in SCRIPTS)
    for route in (
        "/api/images?",
        "/api/images/",
        "/api/favourites/",
        "/api/trash",
        "/restore",
        "/api/events",
        "/api/status",
        "/api/speak",
        "/api/generate",
        "/thumbs/",
    ):
        assert route in source, route
    assert "document.body.dataset.ready = '1'" in source, "the browser tests wait for it"
