"""A real browser for the chat page: Debian's Chromium driven by Playwright (never `playwright install`).

The browser is kept off the network: it resolves nothing but the hosts a test names (the lab's
addresses and loopback), and background services (updates, sync, QUIC) are off.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"

# Open WebUI 0.12 streams a reply over its socket.io WebSocket as these events.
_DELTA_TYPES = ("response.reasoning_text.delta", "response.output_text.delta")


def chromium_args(allowed_hosts: Iterable[str]) -> list[str]:
    """Flags that keep Chromium off the network: only ``allowed_hosts`` (IPs) and loopback resolve."""
    exclude = ", ".join(f"EXCLUDE {h}" for h in ["127.0.0.1", *allowed_hosts])
    return [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--metrics-recording-only",
        f"--host-resolver-rules=MAP * ~NOTFOUND, {exclude}",
    ]


@contextmanager
def chromium(allowed_hosts: Iterable[str]) -> Iterator[object]:
    """A headless Chromium (Playwright ``Browser``) that may only reach ``allowed_hosts``."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        raise AssertionError(f"{CHROMIUM} is missing: install Debian's chromium (scripts/bootstrap.sh does)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=chromium_args(allowed_hosts), timeout=60_000
        )
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class ChatResult:
    """What a person saw, and when (seconds from the start of the chat page's navigation)."""

    reply: str = ""
    page_ready_s: float = 0.0  # navigation start -> the message box accepts input
    sent_s: float = 0.0  # navigation start -> Enter pressed
    first_token_s: float | None = None  # navigation start -> first streamed token over the WebSocket
    first_text_s: float | None = None  # navigation start -> first reply text painted in the page
    reply_s: float | None = None  # navigation start -> the expected reply is on screen
    socket_urls: list[str] = field(default_factory=list)
    socket_errors: list[str] = field(default_factory=list)
    screenshot: Path | None = None

    def as_dict(self) -> dict[str, object]:
        data = {k: v for k, v in self.__dict__.items() if k != "screenshot"}
        data["screenshot"] = str(self.screenshot) if self.screenshot else None
        return data


def sign_in(page, base_url: str, email: str, password: str, timeout_ms: int = 60_000) -> None:
    """Sign in through the login form as a person does."""
    page.goto(base_url + "/auth", wait_until="domcontentloaded", timeout=timeout_ms)
    page.locator("input[type=email]").fill(email, timeout=timeout_ms)
    page.locator("input[type=password]").fill(password)
    page.keyboard.press("Enter")
    page.locator("#chat-input").wait_for(state="visible", timeout=timeout_ms)
    _dismiss_whats_new(page, wait_ms=3_000)


def _dismiss_whats_new(page, wait_ms: int) -> None:
    """The release-notes dialog shows once per user and version until dismissed; it hides the box."""
    button = page.get_by_role("button", name="Okay, Let's Go!")
    try:
        button.wait_for(state="visible", timeout=wait_ms)
    except Exception:  # absent: already seen
        return
    button.click()
    button.wait_for(state="hidden", timeout=10_000)


# JS: the text of the last assistant message without its header (model name) and footer (time).
_LAST_REPLY_JS = """
() => {
  const msgs = Array.from(document.querySelectorAll('#messages-container [id^="message-"]'))
    .filter(e => !e.classList.contains('user-message'));
  const last = msgs[msgs.length - 1];
  if (!last) return '';
  const content = last.querySelector('#response-content-container') || last;
  return content.innerText || '';
}
"""


def chat_once(
    browser,
    base_url: str,
    email: str,
    password: str,
    prompt: str,
    expect: str,
    *,
    timeout_s: float = 120,
    screenshot_name: str = "chat.png",
) -> ChatResult:
    """Sign in, open a fresh chat page, send ``prompt`` and wait until ``expect`` is on screen.

    Returns what happened even when the reply never appears (``reply_s`` is None); the caller asserts.
    """
    result = ChatResult()
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
    try:
        sign_in(context.new_page(), base_url, email, password)
        page = context.new_page()
        t0 = time.monotonic()

        def on_socket(ws) -> None:
            result.socket_urls.append(ws.url)
            ws.on("socketerror", lambda err: result.socket_errors.append(str(err)))

            def on_frame(payload) -> None:
                if (
                    result.first_token_s is None
                    and isinstance(payload, str)
                    and payload.startswith("42")
                    and any(f'"type":"{t}"' in payload for t in _DELTA_TYPES)
                ):
                    result.first_token_s = time.monotonic() - t0

            ws.on("framereceived", on_frame)

        page.on("websocket", on_socket)
        page.goto(base_url + "/", wait_until="domcontentloaded", timeout=60_000)
        box = page.locator("#chat-input")
        box.wait_for(state="visible", timeout=60_000)
        result.page_ready_s = time.monotonic() - t0
        _dismiss_whats_new(page, wait_ms=1)

        box.click()
        page.keyboard.type(prompt)
        page.keyboard.press("Enter")
        result.sent_s = time.monotonic() - t0

        deadline = t0 + result.sent_s + timeout_s
        while time.monotonic() < deadline:
            text = page.evaluate(_LAST_REPLY_JS)
            if text.strip() and result.first_text_s is None:
                result.first_text_s = time.monotonic() - t0
            if expect in text:
                result.reply_s = time.monotonic() - t0
                result.reply = text
                break
            page.wait_for_timeout(25)
        else:
            result.reply = page.evaluate(_LAST_REPLY_JS)
        ARTIFACTS.mkdir(exist_ok=True)
        result.screenshot = ARTIFACTS / screenshot_name
        page.screenshot(path=str(result.screenshot), full_page=True)
    finally:
        context.close()
    return result


def record(name: str, data: dict[str, object]) -> Path:
    """Keep measurements next to the screenshots (test-artifacts/, git-ignored)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path
