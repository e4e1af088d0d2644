"""PNG screenshot of an HTML page with headless Chromium (for README figures of report.html)."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.utils import tmp_prefix

CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


def find_chromium() -> str:
    """Path of a Chromium binary, or PipelineError telling how to install one."""
    for c in CANDIDATES:
        if os.access(c, os.X_OK):
            return c
    for name in ("chromium", "chromium-browser", "google-chrome"):
        w = shutil.which(name)
        if w:
            return w
    raise PipelineError("headless Chromium not found (looked for /usr/bin/chromium); "
                        "install it with: apt-get install -y chromium")


def screenshot_html(html_path: str | os.PathLike, png_path: str | os.PathLike, *, width: int = 1280,
                    height: int = 2000, timeout_s: float = 120.0) -> Path:
    """Render ``html_path`` (a local file) to ``png_path`` (width x height px), atomically.

    Runs Chromium headless, sandbox off, with a fresh throw-away profile and no network services.
    """
    html = Path(html_path).resolve()
    if not html.is_file():
        raise PipelineError(f"{html}: no such HTML file")
    exe = find_chromium()
    png = Path(png_path)
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        tmp_png = Path(profile) / "shot.png"
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--hide-scrollbars", f"--user-data-dir={profile}/user", f"--screenshot={tmp_png}",
               f"--window-size={int(width)},{int(height)}", html.as_uri()]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise PipelineError(f"{html}: Chromium screenshot timed out after {timeout_s:.0f} s") from None
        if proc.returncode != 0 or not tmp_png.is_file() or tmp_png.stat().st_size == 0:
            tail = " ".join((proc.stderr or "").split())[-300:]
            raise PipelineError(f"{html}: Chromium screenshot failed (exit {proc.returncode}): {tail}")
        tmp = png.with_name(f"{tmp_prefix(png.name)}png")
        shutil.copyfile(tmp_png, tmp)
        os.replace(tmp, png)
    return png
