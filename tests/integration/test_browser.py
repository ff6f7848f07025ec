"""The example workflows in ComfyUI's own frontend, in a real headless browser.

Runs when ``COMFYUI_PATH`` is set (like ``test_comfyui_server.py``) and Playwright's Python package and a
Chromium are installed (``CHROMIUM``, default ``/usr/bin/chromium`` from the distribution; Playwright's
own browser download is never used); skips otherwise. A ComfyUI server with only this pack installed
serves the stock frontend; the test then

* asks the template browser's endpoint which templates the pack offers (exactly the example workflows,
  each with its thumbnail) and shows them in the Templates panel;
* loads each one as the template browser does: no missing node types, no console error from the pack,
  and readable at the view it opens with (zoom above the frontend's text threshold, no nodes overlapping
  after the frontend sized them, the whole graph on screen);
* runs the demo from the page and waits until the SyncNet scores of the output and of the ground truth
  are shown on the canvas.

Screenshots go to ``LIPFORCING_ARTEFACTS`` (default: the test's temp folder); the path is printed.

    COMFYUI_PATH=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/venv/bin/python \\
        /path/to/venv/bin/python -m pytest -s tests/integration/test_browser.py

``python tests/integration/test_browser.py --thumbnails`` (same environment) rewrites the thumbnails
``example_workflows/<name>.jpg`` from the real frontend.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from comfy_server import PACK_FOLDER, REPO, Server, comfyui, link_pack, require_comfyui

TEMPLATES = REPO / "example_workflows"
DEMO = "Lip Forcing demo (no downloads)"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1920, "height": 1080}
MIN_SCALE = 0.7  # the frontend stops drawing text below 8/14 = 0.57 (LiteGraph.Canvas.MinFontSizeForLOD 8)
PACK_MARKERS = ("lipforcing", "lip forcing")
RUN_TIMEOUT_S = 300
THUMBNAIL = (640, 480)  # example_workflows/<name>.jpg; the template browser's cards are 4:3

# What the page reports about the loaded graph: zoom, text mode, missing types, node rectangles on screen.
GRAPH_STATE = """() => {
  const canvas = window.app.canvas, graph = window.app.graph, title = window.LiteGraph.NODE_TITLE_HEIGHT;
  const [ox, oy] = canvas.ds.offset, scale = canvas.ds.scale;
  const box = canvas.canvas.getBoundingClientRect();
  return {
    scale, lowQuality: canvas.low_quality,
    missing: graph._nodes.filter(n => !(n.type in window.LiteGraph.registered_node_types)).map(n => n.type),
    nodes: graph._nodes.map(n => ({id: n.id, title: n.title, rect: [
      box.left + (n.pos[0] + ox) * scale, box.top + (n.pos[1] - title + oy) * scale,
      box.left + (n.pos[0] + n.size[0] + ox) * scale, box.top + (n.pos[1] + n.size[1] + oy) * scale]})),
  };
}"""


def _names() -> list[str]:
    return sorted(p.stem for p in TEMPLATES.glob("*.json"))


def _prepare_base(base: Path) -> None:
    """Only the pack; a returning user's settings (no first-run template dialog, no minimap over the graph)."""
    link_pack(base)
    (base / "user" / "default").mkdir(parents=True)
    settings = {"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False}
    (base / "user" / "default" / "comfy.settings.json").write_text(json.dumps(settings))


@contextmanager
def _browser(server: Server) -> Iterator:
    """A Chromium page on the server's frontend, ready once ``window.app`` holds a graph; ``page.problems``
    collects console errors, uncaught exceptions and failed requests."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download)")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.problems = []
            page.on("console", lambda m: m.type == "error" and page.problems.append(f"console: {m.text}"))
            page.on("pageerror", lambda e: page.problems.append(f"exception: {e}"))
            page.on("response", lambda r: r.status >= 400 and page.problems.append(f"HTTP {r.status} {r.url}"))
            page.goto(server.url)
            page.wait_for_function("window.app && window.app.graph && window.LiteGraph", timeout=120_000)
            yield page
        finally:
            browser.close()


def _open_template(page, name: str) -> dict:
    """Fetch the template from the pack's template route and load it as the template browser does."""
    path = f"api/workflow_templates/{PACK_FOLDER}/{urllib.parse.quote(name)}.json"
    page.evaluate("""async ([path, name]) => {
        const workflow = await (await fetch(path)).json();
        await window.app.loadGraphData(workflow, true, true, name);
    }""", [path, name])
    page.wait_for_timeout(1500)
    state = page.evaluate(GRAPH_STATE)
    state["toasts"] = page.evaluate("() => [...document.querySelectorAll('.p-toast-message')].map(t => t.innerText)")
    state["dialogs"] = _close_dialogs(page)  # e.g. the Missing Models dialog of the released-model workflows
    return state


def _close_dialogs(page) -> list[str]:
    """Close every open dialog with its close button (its own, or the top-right-most button, as in the
    Templates dialog); returns their texts."""
    texts = page.evaluate("""() => [...document.querySelectorAll('.p-dialog')].map(d => {
        const corner = b => { const r = b.getBoundingClientRect(); return r.right - r.top; };
        const close = d.querySelector('.p-dialog-close-button')
            ?? [...d.querySelectorAll('button')].sort((a, b) => corner(b) - corner(a))[0];
        const text = d.innerText;
        close?.click();
        return text;
    })""")
    page.wait_for_timeout(500)
    return texts


def _overlaps(nodes: list[dict]) -> list[tuple[str, str]]:
    pairs = []
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = a["rect"], b["rect"]
            if ax0 < bx1 - 1 and bx0 < ax1 - 1 and ay0 < by1 - 1 and by0 < ay1 - 1:
                pairs.append((a["title"], b["title"]))
    return pairs


def _pack_problems(problems: list[str]) -> list[str]:
    """The problems that name the pack; the others are printed (offline, the frontend fails to reach the
    model hosts for file sizes and the template index)."""
    ours = [p for p in problems if any(marker in p.lower() for marker in PACK_MARKERS)]
    if len(ours) < len(problems):
        print(f"\n{len(problems) - len(ours)} console problems not from the pack, e.g. {problems[0][:160]!r}")
    return ours


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("LIPFORCING_ARTEFACTS") or tmp_path_factory.mktemp("browser_artefacts"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nbrowser screenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    require_comfyui()
    base = tmp_path_factory.mktemp("comfy_browser_base")
    _prepare_base(base)
    with comfyui(base) as server, _browser(server) as page:
        page.server = server
        yield page


def test_template_browser_lists_only_the_example_workflows(page, artefacts):
    listed = page.server.get("/workflow_templates")
    assert {k: sorted(v) for k, v in listed.items()} == {PACK_FOLDER: _names()}
    for name in _names():
        for suffix, kind in ((".json", "application/json"), (".jpg", "image/jpeg")):
            url = f"{page.server.url}/api/workflow_templates/{PACK_FOLDER}/{urllib.parse.quote(name)}{suffix}"
            response = page.request.get(url)
            assert response.status == 200 and response.headers["content-type"].startswith(kind), url
    page.get_by_role("button", name="Templates").first.click()
    page.get_by_text(PACK_FOLDER).first.click()
    page.wait_for_timeout(1500)
    shown = page.evaluate("""() => [...document.querySelectorAll('img')].filter(
        img => img.complete && img.naturalWidth > 0).map(img => [img.naturalWidth, img.naturalHeight])""")
    page.screenshot(path=artefacts / "template browser.png")
    assert shown.count(list(THUMBNAIL)) == len(_names()), shown  # the cards show our thumbnails (blob: URLs)
    for name in _names():
        assert page.get_by_text(name, exact=True).first.is_visible(), name
    _close_dialogs(page)


@pytest.mark.parametrize("name", _names())
def test_example_workflow_opens_readable(page, artefacts, name):
    page.problems.clear()
    state = _open_template(page, name)
    page.screenshot(path=artefacts / f"{name}.png")
    assert not state["missing"], f"missing node types: {state['missing']}"
    assert state["scale"] >= MIN_SCALE and not state["lowQuality"], state["scale"]
    assert not _overlaps(state["nodes"]), _overlaps(state["nodes"])
    off_screen = [n["title"] for n in state["nodes"] if n["rect"][0] < 0 or n["rect"][1] < 0
                  or n["rect"][2] > VIEWPORT["width"] or n["rect"][3] > VIEWPORT["height"]]
    assert not off_screen, f"not on screen at the opening view: {off_screen}"
    assert not _pack_problems(page.problems), _pack_problems(page.problems)
    assert not [d for d in state["dialogs"] if "Missing Models" not in d]  # no missing nodes, no load error
    assert not [t for t in state["toasts"] if "valid" in t.lower() or "fixed" in t.lower()], state["toasts"]
    offered = "\n".join(d for d in state["dialogs"] if "Missing Models" in d)
    assert "not allowed" not in offered and "Only allowed suffixes" not in offered, offered  # each one downloadable
    workflow = json.loads((TEMPLATES / f"{name}.json").read_text())
    listed = {m["name"] for n in workflow["nodes"] for m in n.get("properties", {}).get("models", [])}
    assert all(file in offered for file in listed), (listed, offered)


def test_demo_run_shows_the_scores_on_the_canvas(page, artefacts):
    page.problems.clear()
    _open_template(page, DEMO)
    page.get_by_role("button", name="Run").first.click()
    shown = """() => window.app.graph._nodes.filter(n => n.type === 'PreviewAny').map(
        n => [n.title, n.widgets.map(w => String(w.value ?? '')).join(' ')])"""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        texts = dict(page.evaluate(shown))
        if all(texts.get(t, "").startswith("LSE-C") for t in ("Scores — output", "Scores — ground truth")):
            break
        page.wait_for_timeout(1000)
    else:
        page.screenshot(path=artefacts / "demo run (timed out).png")
        raise AssertionError(f"no scores after {RUN_TIMEOUT_S}s: {texts}\n{page.server.log_text()[-3000:]}")
    while page.server.get("/queue")["queue_running"] and time.monotonic() < deadline:  # the plots and video
        page.wait_for_timeout(500)
    page.wait_for_timeout(2000)  # let the previews load and draw
    page.screenshot(path=artefacts / "demo run.png")
    print(f"\n{json.dumps(texts, ensure_ascii=False, indent=1)}")
    body = page.evaluate("() => document.body.innerText + [...document.querySelectorAll('textarea')].map("
                         "t => t.value).join(' ')")
    for title in ("Scores — output", "Scores — ground truth"):
        assert texts[title] in body or texts[title].split("  ")[0] in body  # drawn in the page, not only in the graph
        assert "LSE-D" in texts[title] and "offset" in texts[title]
    assert "generated from" in texts["Length summary"]
    assert not _pack_problems(page.problems), _pack_problems(page.problems)


def write_thumbnails() -> None:
    """Render each example workflow whole (focus mode: no menus) and save it as ``<name>.jpg``."""
    from PIL import Image

    base = Path(tempfile.mkdtemp(prefix="lipforcing_thumbs_"))
    _prepare_base(base)
    width, height = THUMBNAIL[0] * 5 // 2, THUMBNAIL[1] * 5 // 2
    with comfyui(base) as server, _browser(server) as page:
        page.set_viewport_size({"width": width, "height": height})
        page.evaluate("() => window.app.extensionManager.command.execute('Workspace.ToggleFocusMode')")
        for name in _names():
            _open_template(page, name)
            groups = [g["bounding"] for g in json.loads((TEMPLATES / f"{name}.json").read_text())["groups"]]
            x0, y0 = min(g[0] for g in groups), min(g[1] for g in groups)
            x1, y1 = max(g[0] + g[2] for g in groups), max(g[1] + g[3] for g in groups)
            scale = 0.97 * min(width / (x1 - x0), height / (y1 - y0))
            offset = [(width / scale - (x1 - x0)) / 2 - x0, (height / scale - (y1 - y0)) / 2 - y0]
            page.evaluate("""([scale, offset]) => { const c = window.app.canvas;
                c.show_info = false; c.ds.scale = scale; c.ds.offset = offset; c.setDirty(true, true); }""",
                          [scale, offset])
            page.wait_for_timeout(1000)
            shot = base / f"{name}.png"
            clip = {"x": (x0 + offset[0]) * scale, "y": (y0 + offset[1]) * scale,
                    "width": (x1 - x0) * scale, "height": (y1 - y0) * scale}
            page.screenshot(path=shot, clip=clip)  # the groups only, none of the frontend's overlays
            page.screenshot(path=base / "page.png")
            background = Image.open(base / "page.png").convert("RGB").getpixel((2, 2))  # the empty canvas
            graph = Image.open(shot).convert("RGB")
            graph.thumbnail(THUMBNAIL, Image.LANCZOS)
            card = Image.new("RGB", THUMBNAIL, background)
            card.paste(graph, ((THUMBNAIL[0] - graph.width) // 2, (THUMBNAIL[1] - graph.height) // 2))
            card.save(TEMPLATES / f"{name}.jpg", quality=85, optimize=True)
            print(TEMPLATES / f"{name}.jpg")


if __name__ == "__main__":
    if sys.argv[1:] != ["--thumbnails"]:
        raise SystemExit(__doc__)
    write_thumbnails()
