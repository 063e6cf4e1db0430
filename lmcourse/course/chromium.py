"""Debian's Chromium driven by Playwright, offline: what the PDF and the browser tests share.

Playwright never downloads a browser here: every caller launches the ``chromium``
on the PATH (Debian's package) with :data:`CHROMIUM_ARGS`, and serves the built
book on 127.0.0.1 with :class:`QuietHandler` (no request log on the terminal).
"""

from __future__ import annotations

import http.server
import shutil

# no sandbox (containers, root), no GPU, and nothing that reaches out on its own
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]


def find_chromium() -> str | None:
    """Debian's Chromium (``chromium``), or ``chromium-browser``, on the PATH."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder without logging each request."""

    def log_message(self, *args):
        pass
