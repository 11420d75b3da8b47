"""End to end: the real server on a loopback port, driven in headless Chromium through Playwright.

Needs Debian's `chromium` and `pip install playwright` (never `playwright install`: the system
browser is used). Skipped cleanly when either is missing. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api")

from serve_helpers import LiveServer as _Server  # noqa: E402
from serve_helpers import build_index  # noqa: E402

from calibclip.index import Index  # noqa: E402

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
COLORS = [(220, 40, 40), (40, 160, 60), (40, 80, 220), (240, 200, 40), (150, 60, 200), (30, 190, 200),
          (250, 130, 30), (90, 90, 90), (240, 240, 240), (120, 70, 30)]

if CHROMIUM is None:
    pytest.skip("chromium is not installed (apt-get install -y chromium)", allow_module_level=True)


def _draw_collection(folder: Path) -> None:
    """Ten small pictures: a coloured shape on a contrasting background (easy to see in a screenshot)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, color in enumerate(COLORS):
        img = Image.new("RGB", (160, 120), COLORS[(i + 3) % len(COLORS)])
        draw = ImageDraw.Draw(img)
        box = (30 + 4 * i, 20, 130 - 3 * i, 100)
        (draw.ellipse if i % 2 else draw.rectangle)(box, fill=color)
        img.save(folder / f"shape{i:02d}.png")


@pytest.fixture(scope="module")
def gallery(tmp_path_factory, tiny_encoder):
    root = tmp_path_factory.mktemp("browser")
    _draw_collection(root / "shapes")
    build_index(root / "shapes", tiny_encoder, root / "shapes.idx")
    return root / "shapes", root / "shapes.idx"


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def _all_images_loaded(page, selector: str) -> bool:
    return page.eval_on_selector_all(selector, "els => els.length > 0 && els.every(e => e.complete && "
                                               "e.naturalWidth > 0)")


def _wait_images(page, selector: str = "#results .card img") -> None:
    page.wait_for_function(f"() => {{ const els = [...document.querySelectorAll('{selector}')]; "
                           "return els.length > 0 && els.every(e => e.complete && e.naturalWidth > 0); }")


def _names(page) -> list[str]:
    return page.eval_on_selector_all("#results .card .name", "els => els.map(e => e.textContent)")


def test_page_search_upload_and_composed(gallery, browser, tiny_encoder, monkeypatch):
    from calibclip.serve import create_app

    folder, index_path = gallery
    # Composed search needs a φ checkpoint, which the tiny model has none of: the page's wiring
    # (multipart image + text → results) is what is driven here, the index answers by image.
    seen = {}

    def composed_by_image(self, image, text, phi, k=10, prompt="", exclude=()):
        seen["text"] = text
        return self.search_image(image, k=k)

    monkeypatch.setattr(Index, "search_composed", composed_by_image)
    app = create_app(index_path, encoder=tiny_encoder, phi=object())
    expected = [Path(h.path).name for h in Index.open(index_path, tiny_encoder).search("a red square", k=10)]
    errors: list[str] = []
    with _Server(app) as url:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(url)
        page.wait_for_function("() => document.querySelector('#stats').textContent.includes('images')")
        assert page.text_content("#stats").startswith("10 images")
        assert page.is_disabled("#calib")  # this install has no usable calibration for the index
        assert page.is_visible("#calib-note") and "--calib" in page.text_content("#calib-note")  # why, inline
        assert page.is_enabled("#composed-button")

        # text search: ranked grid of thumbnails, with scores, in the index's order
        page.fill("#query", "a red square")
        page.press("#query", "Enter")
        page.wait_for_selector("#results .card")
        _wait_images(page)
        assert _names(page) == expected
        scores = [float(s) for s in page.eval_on_selector_all(".card .score", "els => els.map(e => e.textContent)")]
        assert scores == sorted(scores, reverse=True) and len(scores) == 10
        assert "10 results" in page.text_content("#status")
        page.screenshot(path=str(_artifact("serve_text_search.png")), full_page=True)

        # upload a reference image: "Similar images" puts that very image first
        page.set_input_files("#ref-file", str(folder / "shape04.png"))
        page.wait_for_function("() => !document.querySelector('#ref-preview').hidden")
        page.click("#similar-button")
        page.wait_for_function("() => document.querySelector('#results .card .name')?.textContent === "
                               "'shape04.png' && document.querySelector('#status').textContent.includes('results')")
        _wait_images(page)

        # composed: reference + modification text go to /search/composed
        page.fill("#mod-text", "is blue instead")
        page.click("#composed-button")
        page.wait_for_function("() => document.querySelector('#status').textContent.includes('results')")
        assert seen["text"] == "is blue instead"
        assert _names(page)[0] == "shape04.png"

        # click a result → "Search similar" → that image first; "Use as reference" → preview from the server
        card = page.locator("#results .card").nth(3)
        name = card.locator(".name").text_content()
        card.click()
        card.locator("button.similar").click()
        page.wait_for_function(f"() => document.querySelector('#results .card .name')?.textContent === '{name}'")
        _wait_images(page)
        first = page.locator("#results .card").first
        first.click()
        first.locator("button.use-ref").click()
        page.wait_for_function("() => { const p = document.querySelector('#ref-preview'); "
                               "return !p.hidden && p.complete && p.naturalWidth > 0; }")
        shot = _artifact("serve_page.png")
        page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot: {shot}")
        page.close()
    assert errors == []


def test_page_with_api_key_and_drag_drop(gallery, browser, tiny_encoder):
    from calibclip.serve import create_app

    folder, index_path = gallery
    app = create_app(index_path, encoder=tiny_encoder, api_key="k3y-for-test")
    with _Server(app) as url:
        page = browser.new_page(viewport={"width": 1000, "height": 800})
        page.goto(url)
        page.wait_for_selector("#key-panel:not([hidden])")  # /stats said 401: the page asks for the key
        page.fill("#key-input", "k3y-for-test")
        page.click("#key-form button")
        page.wait_for_function("() => document.querySelector('#stats').textContent.includes('images')")
        assert page.evaluate("localStorage.getItem('calibclip.apiKey')") == "k3y-for-test"

        page.fill("#query", "a green circle")
        page.press("#query", "Enter")
        page.wait_for_selector("#results .card")
        _wait_images(page)  # thumbnails fetched with the X-API-Key header, shown from blob: URLs
        assert page.eval_on_selector("#results .card img", "e => e.src").startswith("blob:")

        # drop a file on the drop zone, then search similar
        data = list((folder / "shape07.png").read_bytes())
        page.evaluate("""bytes => {
            const dt = new DataTransfer();
            dt.items.add(new File([new Uint8Array(bytes)], 'dropped.png', {type: 'image/png'}));
            const drop = document.querySelector('#drop');
            drop.dispatchEvent(new DragEvent('dragover', {dataTransfer: dt, bubbles: true, cancelable: true}));
            drop.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
        }""", data)
        page.wait_for_function("() => document.querySelector('#status').textContent.includes('dropped.png')")
        page.click("#similar-button")
        page.wait_for_function("() => document.querySelector('#results .card .name')?.textContent === 'shape07.png'")
        # composed is off on this server: the button says so instead of failing
        assert page.is_disabled("#composed-button")
        assert "--phi" in page.text_content("#composed-note")
        page.screenshot(path=str(_artifact("serve_page_api_key.png")), full_page=True)
        page.close()


@pytest.fixture(scope="module")
def calibrated(gallery, tiny_model_dir):
    """The gallery indexed with CalibCLIP features, an encoder for it, and the plain/calibrated rankings."""
    calib = pytest.importorskip("calibclip.calib")
    import calibclip

    folder, _ = gallery
    enc = calibclip.load(str(tiny_model_dir), device="cpu")
    enc.calibration = calib.CalibConfig()
    index = build_index(folder, enc, folder.parent / "shapes-calib.idx")
    on = [Path(h.path).name for h in index.search("a red square", k=10)]
    enc.calibration = None
    off = [Path(h.path).name for h in Index.open(folder.parent / "shapes-calib.idx", enc).search("a red square", k=10)]
    return folder.parent / "shapes-calib.idx", enc, calib.CalibConfig(), off, on


def _cards(page, n: int) -> None:
    page.wait_for_function(f"() => document.querySelectorAll('#results .card').length === {n} && "
                           "!document.querySelector('#status').textContent.endsWith('…')")


def test_page_url_state_paging_and_toggles(gallery, calibrated, browser):
    from calibclip.serve import create_app

    index_path, enc, cfg, plain, calibrated_order = calibrated
    assert plain != calibrated_order  # else the toggle test below would prove nothing
    errors: list[str] = []
    with _Server(create_app(index_path, encoder=enc, calibration=cfg)) as url:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("pageerror", lambda e: errors.append(str(e)))
        # a shared link opens the search it names: query, k=4 (not in the menu), calib off
        page.goto(f"{url}/?mode=text&q=a%20red%20square&k=4")
        _cards(page, 4)
        assert _names(page) == plain[:4] and page.input_value("#query") == "a red square"
        assert page.input_value("#k") == "4" and "for “a red square”" in page.text_content("#status")

        # "More results" pages on (ranks continue) until the collection is exhausted
        page.click("#more")
        _cards(page, 8)
        page.click("#more")
        _cards(page, 10)
        assert _names(page) == plain and page.is_hidden("#more")
        ranks = page.eval_on_selector_all(".card .rank", "els => els.map(e => e.textContent)")
        assert ranks == [f"#{i}" for i in range(1, 11)]

        # toggling CalibCLIP re-runs the search, calibrated, and the URL says so
        page.check("#calib")
        page.wait_for_function("() => document.querySelector('#status').textContent.includes('(CalibCLIP)')")
        _cards(page, 4)
        assert _names(page) == calibrated_order[:4] and "calib=1" in page.url
        page.reload()  # a bookmark restores the calibrated search
        page.wait_for_function("() => document.querySelector('#status').textContent.includes('(CalibCLIP)')")
        _cards(page, 4)
        assert page.is_checked("#calib") and _names(page) == calibrated_order[:4]

        # "Search similar" names the image in the status and clears the text box
        card = page.locator("#results .card").nth(2)
        name = card.locator(".name").text_content()
        card.click()
        card.locator("button.similar").click()
        page.wait_for_function(f"() => document.querySelector('#status').textContent.includes('similar to {name}')")
        assert page.input_value("#query") == "" and "mode=similar" in page.url
        assert _names(page)[0] == name
        page.go_back()  # history: back to the text search
        page.wait_for_function("() => document.querySelector('#status').textContent.includes('a red square')")
        assert page.input_value("#query") == "a red square"

        # a query of spaces says what to do instead of doing nothing
        page.fill("#query", "   ")
        page.press("#query", "Enter")
        assert "type what you are looking for" in page.text_content("#status")
        assert "error" in page.get_attribute("#status", "class")

        # dropping a new reference clears the grid of the previous search
        page.set_input_files("#ref-file", str(gallery[0] / "shape02.png"))
        page.wait_for_function("() => document.querySelector('#status').textContent.includes('shape02.png')")
        assert page.locator("#results .card").count() == 0 and page.is_hidden("#more")
        page.screenshot(path=str(_artifact("serve_page_desktop.png")), full_page=True)
        page.close()

        # a phone (375 px): nothing wider than the screen, header included
        phone = browser.new_page(viewport={"width": 375, "height": 740}, device_scale_factor=2)
        phone.on("pageerror", lambda e: errors.append(str(e)))
        phone.goto(f"{url}/?mode=text&q=a%20red%20square&k=4")
        _cards(phone, 4)
        _wait_images(phone)
        assert phone.evaluate("document.documentElement.scrollWidth") <= 375
        for selector in ("header", "#text-form", "#composed-panel", "#results"):
            box = phone.locator(selector).bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 375, selector
        phone.screenshot(path=str(_artifact("serve_page_phone.png")), full_page=True)
        phone.close()
    assert errors == []


def test_docs_page_renders_offline(gallery, browser, tiny_encoder):
    """/docs draws the API from local assets only: every request off 127.0.0.1 is blocked and counted."""
    from calibclip.serve import create_app

    app = create_app(gallery[1], encoder=tiny_encoder, api_key="k3y-for-test")
    outside: list[str] = []
    with _Server(app) as url:
        page = browser.new_page(viewport={"width": 1100, "height": 800})

        def only_local(route):
            if route.request.url.startswith(url):
                return route.continue_()
            outside.append(route.request.url)
            return route.abort()

        page.route("**/*", only_local)
        page.goto(f"{url}/docs")
        page.wait_for_selector(".opblock-summary-path", timeout=20_000)
        paths = page.eval_on_selector_all(".opblock-summary-path", "els => els.map(e => e.textContent)")
        assert "/search/text" in paths
        assert "calibclip API" in page.title() and page.is_visible("button.authorize")
        assert "k3y-for-test" not in page.content()
        page.screenshot(path=str(_artifact("serve_docs.png")))
        page.close()
    assert outside == []


def _artifact(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name
