"""The counter's JavaScript in a real browser: camera QR scanning, the live cart, single submission.

Pages from tests/browser/harness/ follow the DOM contract of static/js/scan.js and cart.js and load
the real files from pointsmart/static through a small HTTP server on 127.0.0.1 (a secure context,
so the camera is allowed). Chromium's fake camera plays a Y4M video of a card's QR code made here.
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import qrcode
from PIL import Image
from playwright.sync_api import expect

from .conftest import CHROMIUM, CHROMIUM_ARGS, REPO_ROOT

pytestmark = pytest.mark.browser

STATIC = REPO_ROOT / "pointsmart" / "static"
HARNESS = Path(__file__).parent / "harness"
INSECURE_HOST = "counter.test"  # resolved to 127.0.0.1 by the camera browser: not a secure context
POST_DELAY = 0.5  # a slow counter network: a second tap lands while the first request is in flight


@dataclass
class Harness:
    url: str
    port: int
    posts: list[dict[str, list[str]]] = field(default_factory=list)


class Handler(SimpleHTTPRequestHandler):
    """Serve /static/* from pointsmart/static, the rest from the harness; record form posts."""

    harness: Harness

    def translate_path(self, path: str) -> str:
        if path.startswith("/static/"):
            self.directory = str(STATIC)
            path = path[len("/static") :]
        else:
            self.directory = str(HARNESS)
        return super().translate_path(path)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        self.harness.posts.append(urllib.parse.parse_qs(body, keep_blank_values=True))
        time.sleep(POST_DELAY)
        page = f'<!doctype html><title>sent</title><p id="submitted">{len(self.harness.posts)}</p>'
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.end_headers()
        self.wfile.write(page.encode())

    def log_message(self, format, *args) -> None:  # keep the test output quiet
        pass


@pytest.fixture(scope="module")
def server():
    harness = Harness(url="", port=0)
    handler = type("BoundHandler", (Handler,), {"harness": harness})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    harness.port = httpd.server_address[1]
    harness.url = f"http://127.0.0.1:{harness.port}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield harness
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def harness(server):
    server.posts.clear()
    return server


def card_token() -> str:
    """A token like a real card's: 26 uppercase base32 characters."""
    return base64.b32encode(secrets.token_bytes(16)).decode().rstrip("=")


def write_y4m(path: Path, image: Image.Image, frames: int = 5) -> None:
    """Write a still image as a short YUV 4:2:0 Y4M video, which Chromium's fake camera loops."""
    width, height = image.size
    assert width % 2 == 0 and height % 2 == 0
    y, cb, cr = image.convert("YCbCr").split()
    half = (width // 2, height // 2)
    frame = y.tobytes() + cb.resize(half).tobytes() + cr.resize(half).tobytes()
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            out.write(b"FRAME\n" + frame)


def card_video(path: Path, token: str) -> None:
    """A 640x480 camera view of a card held up: the QR code on a grey table."""
    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=10, border=3)
    qr.add_data(token, optimize=0)
    qr.make(fit=True)
    code = qr.make_image(fill_color="black", back_color="white").get_image().convert("RGB")
    view = Image.new("RGB", (640, 480), (150, 160, 150))
    view.paste(code, ((640 - code.width) // 2, (480 - code.height) // 2))
    write_y4m(path, view)


def launch(chromium, *args: str, **options):
    """Launch another Debian Chromium through the `chromium` fixture's Playwright."""
    return chromium.browser_type.launch(
        executable_path=str(CHROMIUM), headless=True, args=[*CHROMIUM_ARGS, *args], **options
    )


@pytest.fixture(scope="module")
def camera(chromium, tmp_path_factory):
    """A Chromium whose camera films a card, allowed without asking; yield (browser, token)."""
    token = card_token()
    video = tmp_path_factory.mktemp("camera") / "card.y4m"
    card_video(video, token)
    browser = launch(
        chromium,
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={video}",
        f"--host-resolver-rules=MAP {INSECURE_HOST} 127.0.0.1",
    )
    yield browser, token
    browser.close()


@pytest.fixture(scope="module")
def refusing_camera(chromium):
    """A Chromium with a camera and no fake permission UI: a page that asks for it is refused."""
    browser = launch(chromium, "--use-fake-device-for-media-stream")
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def bfcache_browser(chromium):
    """A Chromium with its back/forward cache, which Playwright turns off by default."""
    browser = launch(chromium, ignore_default_args=["--disable-back-forward-cache"])
    yield browser
    browser.close()


@pytest.fixture
def new_page():
    """new_page(browser, init_script=None): a page in a fresh context, closed after the test."""
    contexts = []

    def open_(browser, init_script: str | None = None):
        context = browser.new_context(viewport={"width": 360, "height": 640}, locale="en")
        context.set_default_timeout(15_000)
        if init_script:
            context.add_init_script(init_script)
        contexts.append(context)
        return context.new_page()

    yield open_
    for context in contexts:
        context.close()


# Record every camera stream, and what the page looks like at the moment the form is submitted
# (kept in sessionStorage, which survives the navigation to the response page).
WATCH_CAMERA = """
if (location.pathname === "/scan.html") {
  window.__streams = [];
  if (navigator.mediaDevices) {
    const getUserMedia = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
    navigator.mediaDevices.getUserMedia = (constraints) => getUserMedia(constraints).then((s) => {
      window.__streams.push(s);
      sessionStorage.setItem("constraints", JSON.stringify(constraints));
      return s;
    });
  }
  window.__tracks = () => window.__streams.flatMap((s) => s.getTracks().map((t) => t.readyState));
  document.addEventListener("submit", () => {
    sessionStorage.setItem("atSubmit", JSON.stringify({
      code: document.getElementById("card-code").value,
      tracks: window.__tracks(),
      viewHidden: document.querySelector("[data-scan-view]").hidden,
    }));
  }, true);
}
"""

NO_BARCODE_DETECTOR = "delete window.BarcodeDetector;"

# A BarcodeDetector as Android's Chrome has one: it decodes the frame it is given (with jsQR,
# since Chromium on Linux has none) and counts its calls in sessionStorage, which outlives the
# submission, to prove that scan.js took this path.
STUB_BARCODE_DETECTOR = """
window.BarcodeDetector = class {
  static getSupportedFormats() { return Promise.resolve(["aztec", "qr_code"]); }
  constructor(options) { sessionStorage.setItem("formats", JSON.stringify(options.formats)); }
  detect(source) {
    sessionStorage.setItem("detects", Number(sessionStorage.getItem("detects")) + 1);
    if (!(source instanceof HTMLVideoElement)) return Promise.reject(new TypeError("not a video"));
    const canvas = document.createElement("canvas");
    canvas.width = source.videoWidth;
    canvas.height = source.videoHeight;
    const context = canvas.getContext("2d");
    context.drawImage(source, 0, 0);
    const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
    const found = window.jsQR(pixels, canvas.width, canvas.height);
    return Promise.resolve(found ? [{ format: "qr_code", rawValue: found.data }] : []);
  }
};
"""

# jsQR replaced by a counter that never finds a code, to watch the decode loop run and stop.
COUNTING_JSQR = """
window.__decodes = [];
window.jsQR = function (data, width, height) {
  window.__decodes.push([width, height, data.length]);
  return null;
};
"""


def submitted(harness: Harness, count: int = 1) -> list[dict[str, list[str]]]:
    """Wait for the server to have received `count` posts and a moment more; return them all."""
    deadline = time.monotonic() + 10
    while len(harness.posts) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(POST_DELAY + 0.5)  # room for a second, unwanted post to arrive
    return list(harness.posts)


# --- scanning ---


@pytest.mark.parametrize(
    "decoder", ["jsqr", "default", "barcode-detector"], ids=["jsqr", "default", "barcode-detector"]
)
def test_camera_scan_fills_the_code_and_submits(camera, harness, new_page, decoder):
    browser, token = camera
    extra = {
        "jsqr": NO_BARCODE_DETECTOR,
        "default": "",
        "barcode-detector": STUB_BARCODE_DETECTOR,
    }[decoder]
    page = new_page(browser, WATCH_CAMERA + extra)
    page.goto(harness.url + "/scan.html")

    start = page.locator("[data-scan-start]")
    expect(start).to_be_visible()
    start.click()
    expect(page.locator("#submitted")).to_have_text("1", timeout=15_000)

    assert submitted(harness) == [{"code": [token]}]
    state = page.evaluate("JSON.parse(sessionStorage.getItem('atSubmit'))")
    assert state == {"code": token, "tracks": ["ended"], "viewHidden": True}
    constraints = page.evaluate("JSON.parse(sessionStorage.getItem('constraints'))")
    assert constraints["video"]["facingMode"] == "environment"
    # Only the stub detector counts. Chromium on Linux has no BarcodeDetector of its own, so
    # "default" decodes with jsQR too, like "jsqr" (where scan.js cannot find one).
    detects = page.evaluate("Number(sessionStorage.getItem('detects'))")
    if decoder == "barcode-detector":
        assert detects >= 1
        assert page.evaluate("sessionStorage.getItem('formats')") == '["qr_code"]'
    else:
        assert detects == 0


def test_decoding_is_throttled_and_stop_releases_the_camera(camera, harness, new_page):
    browser, _ = camera
    page = new_page(browser, WATCH_CAMERA + NO_BARCODE_DETECTOR)
    page.route(
        "**/vendor/jsqr/jsQR.js",
        lambda route: route.fulfill(body=COUNTING_JSQR, content_type="text/javascript"),
    )
    page.goto(harness.url + "/scan.html")
    page.locator("[data-scan-start]").click()
    view = page.locator("[data-scan-view]")
    expect(view).to_be_visible()
    expect(page.locator("[data-scan-status]")).to_have_text("Looking for a card")

    page.wait_for_function("window.__decodes.length >= 1")
    first = page.evaluate("window.__decodes.length")
    page.wait_for_timeout(2000)
    decodes = page.evaluate("window.__decodes")
    rate = (len(decodes) - first) / 2
    assert 2 <= rate <= 9, f"{rate} decodes a second"
    width, height, size = decodes[-1]
    assert 0 < width < 640 and width * 3 == height * 4, "downscaled from 640x480, same shape"
    assert size == width * height * 4
    assert page.evaluate("window.__tracks()") == ["live"]

    page.locator("[data-scan-stop]").click()
    expect(view).to_be_hidden()
    expect(page.locator("[data-scan-start]")).to_be_visible()
    assert page.evaluate("window.__tracks()") == ["ended"]
    stopped = page.evaluate("window.__decodes.length")
    page.wait_for_timeout(500)
    assert page.evaluate("window.__decodes.length") == stopped
    expect(page.locator("#card-code")).to_be_focused()
    assert harness.posts == []


def test_denied_camera_shows_the_denied_message(refusing_camera, harness, new_page):
    page = new_page(refusing_camera, WATCH_CAMERA)
    page.goto(harness.url + "/scan.html")
    page.locator("[data-scan-start]").click()

    expect(page.locator("[data-scan-status]")).to_have_text("Camera permission denied")
    expect(page.locator("[data-scan-view]")).to_be_visible()
    expect(page.locator("#card-code")).to_be_focused()
    # The typed code still goes through.
    page.locator("#card-code").fill("ABCD-2345")
    page.locator("#card-code").press("Enter")
    expect(page.locator("#submitted")).to_have_text("1")
    assert submitted(harness) == [{"code": ["ABCD-2345"]}]


def test_missing_camera_shows_the_no_camera_message(chromium, harness, new_page):
    page = new_page(chromium)  # this Chromium has no camera at all
    page.goto(harness.url + "/scan.html")
    page.locator("[data-scan-start]").click()
    expect(page.locator("[data-scan-status]")).to_have_text("No camera found")
    page.locator("[data-scan-stop]").click()
    expect(page.locator("[data-scan-view]")).to_be_hidden()
    expect(page.locator("[data-scan-status]")).to_have_text("")


def test_insecure_page_explains_that_the_camera_needs_https(camera, harness, new_page):
    browser, _ = camera
    page = new_page(browser)
    page.goto(f"http://{INSECURE_HOST}:{harness.port}/scan.html")
    assert page.evaluate("window.isSecureContext") is False
    page.locator("[data-scan-start]").click()
    expect(page.locator("[data-scan-status]")).to_have_text("The camera needs HTTPS")


def test_no_camera_api_hides_the_button_and_a_handheld_scanner_still_works(
    chromium, harness, new_page
):
    page = new_page(chromium, "delete Navigator.prototype.mediaDevices;")
    page.goto(harness.url + "/scan.html")
    expect(page.locator("#card-code")).to_be_focused()
    expect(page.locator("[data-scan-start]")).to_be_hidden()
    # A USB scanner types into the focused field and presses Enter.
    page.keyboard.type("Q7RTK2WZ3M5N4PXHJ6YV2BCDEF")
    page.keyboard.press("Enter")
    expect(page.locator("#submitted")).to_have_text("1")
    assert submitted(harness) == [{"code": ["Q7RTK2WZ3M5N4PXHJ6YV2BCDEF"]}]


# --- cart ---


def line_state(page, line: str) -> tuple[str, str, bool]:
    """Return (quantity, line total, in-cart) for one cart line."""
    row = page.locator(f"#{line}")
    return (
        row.locator("input").input_value(),
        row.locator("[data-line-total]").inner_text(),
        "in-cart" in (row.get_attribute("class") or "").split(),
    )


def cart_state(page) -> dict:
    form = page.locator("#cart")
    return {
        "total": form.locator("[data-cart-total]").inner_text(),
        "remaining": form.locator("[data-cart-remaining]").inner_text(),
        "over": "over" in (form.get_attribute("class") or "").split(),
        "note": form.locator("[data-cart-over]").is_visible(),
        "submit": form.locator("[data-cart-submit]").is_enabled(),
    }


def state(total, remaining, over=False, submit=True):
    return {"total": total, "remaining": remaining, "over": over, "note": over, "submit": submit}


def step(page, line: str, delta: int, times: int = 1) -> None:
    for _ in range(times):
        page.locator(f"#{line} [data-step='{delta}']").click()


def test_cart_steps_and_typing_update_totals_and_balance(chromium, harness, new_page):
    page = new_page(chromium)
    page.goto(harness.url + "/cart.html")
    assert cart_state(page) == state("0", "120", submit=False)
    assert line_state(page, "soap") == ("0", "", False)
    expect(page.locator("#soap [data-step='-1']")).to_be_disabled()

    step(page, "soap", 1, 2)
    assert line_state(page, "soap") == ("2", "60", True)
    assert cart_state(page) == state("60", "60")

    # Rice: max 9 but only 2 in stock.
    step(page, "rice", 1, 2)
    expect(page.locator("#rice [data-step='1']")).to_be_disabled()
    assert line_state(page, "rice") == ("2", "100", True)
    assert cart_state(page) == state("160", "-40", over=True, submit=False)

    page.locator("#rice input").fill("9")
    assert line_state(page, "rice") == ("2", "100", True)

    step(page, "soap", -1)
    assert cart_state(page) == state("130", "-10", over=True, submit=False)
    step(page, "soap", -1)
    assert line_state(page, "soap") == ("0", "", False)
    assert cart_state(page) == state("100", "20")

    # Typing: exactly the balance is allowed; an empty or negative field counts as 0.
    page.locator("#salt input").fill("4")
    assert line_state(page, "salt") == ("4", "20", True)
    assert cart_state(page) == state("120", "0")
    page.locator("#salt input").fill("5")
    assert cart_state(page) == state("125", "-5", over=True, submit=False)
    page.locator("#salt input").fill("")
    assert line_state(page, "salt") == ("", "", False)
    assert cart_state(page) == state("100", "20")
    page.locator("#salt input").fill("-3")
    assert line_state(page, "salt") == ("0", "", False)

    page.locator("#rice input").fill("0")
    assert cart_state(page) == state("0", "120", submit=False)
    page.locator("#soap input").fill("30")  # max and stock 7
    assert line_state(page, "soap") == ("7", "210", True)
    assert cart_state(page) == state("210", "-90", over=True, submit=False)
    assert harness.posts == []


# 100 ms after a form's first submission, record whether its submit buttons are disabled (the old
# page is still shown then: the server answers after POST_DELAY; Playwright cannot look at it
# while a navigation is pending, so the page notes it in sessionStorage).
WATCH_ONCE = """
document.addEventListener("submit", (event) => {
  const buttons = event.target.querySelectorAll("button:not([type]), button[type=submit]");
  setTimeout(() => {
    if (sessionStorage.getItem("disabled") === null) {
      sessionStorage.setItem("disabled", JSON.stringify(Array.from(buttons, (b) => b.disabled)));
    }
  }, 100);
}, true);
"""


def double_tap(page, selector: str) -> None:
    """Tap twice, 150 ms apart, as a hurried clerk does, while the first request is on its way."""
    box = page.locator(selector).bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.click(x, y)
    page.wait_for_timeout(150)
    page.mouse.click(x, y)


def test_cart_posts_the_quantities_once_on_a_double_tap(chromium, harness, new_page):
    page = new_page(chromium, WATCH_ONCE)
    page.goto(harness.url + "/cart.html")
    step(page, "soap", 1)
    step(page, "salt", 1, 3)
    assert cart_state(page) == state("45", "75")

    double_tap(page, "[data-cart-submit]")
    expect(page.locator("#submitted")).to_have_text("1")
    assert submitted(harness) == [{"qty-5": ["1"], "qty-6": ["0"], "qty-7": ["3"]}]
    assert page.evaluate("sessionStorage.getItem('disabled')") == "[true]"


def test_any_once_form_submits_once_and_keeps_its_button_value(chromium, harness, new_page):
    page = new_page(chromium, WATCH_ONCE)
    page.goto(harness.url + "/cart.html")
    double_tap(page, "#void button")
    expect(page.locator("#submitted")).to_have_text("1")
    assert submitted(harness) == [{"reason": ["wrong household"], "action": ["void"]}]
    assert page.evaluate("sessionStorage.getItem('disabled')") == "[true]"


def test_once_form_is_usable_again_when_restored_from_the_back_forward_cache(
    bfcache_browser, harness, new_page
):
    shown = "addEventListener('pageshow', (e) => { window.__restored = e.persisted; });"
    page = new_page(bfcache_browser, shown)
    page.goto(harness.url + "/cart.html")
    step(page, "salt", 1)
    page.locator("[data-cart-submit]").click()
    expect(page.locator("#submitted")).to_have_text("1")

    page.go_back(wait_until="commit")  # a page from the cache fires pageshow but not load
    page.wait_for_function("window.__restored !== undefined")
    assert page.evaluate("window.__restored") is True, "the page came from the bfcache"
    expect(page.locator("#salt input")).to_have_value("1")
    expect(page.locator("[data-cart-submit]")).to_be_enabled()
    assert page.locator("#cart").get_attribute("aria-busy") is None
    page.locator("#salt input").fill("0")
    expect(page.locator("[data-cart-submit]")).to_be_disabled()  # the cart's own rule still holds

    # Any other once form too.
    page.evaluate("window.__restored = undefined")
    page.locator("#void button").click()
    expect(page.locator("#submitted")).to_have_text("2")
    page.go_back(wait_until="commit")
    page.wait_for_function("window.__restored !== undefined")
    assert page.evaluate("window.__restored") is True
    expect(page.locator("#void button")).to_be_enabled()
    assert [post.get("action") for post in submitted(harness, 2)] == [None, ["void"]]
