"""An HTML template for ``dvc plots show`` that works offline: vega, vega-lite and vega-embed inline.

DVC's default page loads the three libraries from a CDN, so offline (a hospital workstation, a
cluster node) every Vega plot is a blank area, with no error. This writes a page template whose
``<head>`` carries the libraries as one inline script, taken from the installed
``vl-convert-python`` package (:func:`vl_convert.javascript_bundle`, which sets ``vegaEmbed``,
``vegaLite`` and ``vega`` on ``window``), and which omits DVC's ``{scripts}`` placeholder (the CDN
tags). ``.dvc/config`` points ``plots.html_template`` at it; the ``plots_template`` stage of
``dvc.yaml`` writes it, so ``dvc repro`` brings it on any machine.

CLI: ``python -m pipeline.dvcplots --out build/dvc_plots_template.html``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC plots (offline: vega {vega}, vega-lite {vega_lite}, vega-embed inline)</title>
    <script type="text/javascript">
{bundle}
    </script>
    <style>
        body { font-family: sans-serif; }
        table { border-spacing: 15px; }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def template_html() -> str:
    """The page template: DVC's ``{plot_divs}`` / ``{refresh_tag}`` placeholders, no ``{scripts}``."""
    try:
        import vl_convert as vlc
    except ImportError as e:  # pragma: no cover - a dependency of the project
        raise SystemExit("vl-convert-python is not installed: pip install vl-convert-python "
                         "(it carries vega, vega-lite and vega-embed for offline plots)") from e
    bundle = vlc.javascript_bundle()
    if "{plot_divs}" in bundle or "{scripts}" in bundle:
        raise RuntimeError("the vega bundle holds a DVC placeholder; cannot build the template")
    page = PAGE.replace("{vega}", vlc.get_vega_version()).replace("{vega_lite}", vlc.get_vegalite_versions()[-1])
    return page.replace("{bundle}", bundle.replace("</script", "<\\/script"))  # the bundle last: it is not ours


def write_template(out: str | Path) -> Path:
    """Write the template to ``out`` (atomically); returns the path."""
    from pipeline.utils import write_text

    return write_text(Path(out), template_html())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.dvcplots", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="build/dvc_plots_template.html", help="where to write the HTML template")
    a = p.parse_args(argv)
    path = write_template(a.out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
