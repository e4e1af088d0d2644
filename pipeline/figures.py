"""``python -m pipeline figures``: the pictures the README shows, made from DVC outputs.

* ``docs/synthetic_scan.png``  axial/coronal slices of synthetic scans, annotated nodules circled
  (from ``data/luna16``; made by ``pipeline.synth.figure.plot_scan``);
* ``docs/patches.png``         2D / 2.5D / 3D-centre-slice patches of a few candidates with labels
  (from ``data/patches``; ``pipeline.patches.figure.plot_patches``);
* ``docs/froc.png``, ``docs/froc_detection.png``  the FROC curves of the run (copied from
  ``eval/<track>/froc.png``; the title, with the CPM, is also the PNG's ``Title`` text);
* ``docs/report.png``          a headless-Chromium screenshot of the detection HTML report
  (from ``data/detect_test/report.html``; ``pipeline.detect.screenshot.screenshot_html``).

Each figure is skipped with a message when its input does not exist yet (run ``dvc repro`` first);
without headless Chromium, ``report.png`` is a placeholder that says so. The ``figures`` stage of
``dvc.yaml`` runs this after ``evaluate`` and ``infer`` (outputs ``cache: false``: they live in git).
"""
from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)
FIGURES = ("synth", "patches", "froc", "report")


def make_figures(out_dir: Path, which: tuple[str, ...] = FIGURES, *, luna: Path = Path("data/luna16"),
                 patches: Path = Path("data/patches"), eval_dir: Path = Path("eval"),
                 report: Path = Path("data/detect_test/report.html")) -> list[Path]:
    """Write the requested figures into ``out_dir``; return the paths written."""
    bad = sorted(set(which) - set(FIGURES))
    if bad:
        from pipeline.errors import ConfigError

        raise ConfigError(f"unknown figure(s) {bad}; valid: {list(FIGURES)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def missing(name: str, path: Path) -> bool:
        if path.exists():
            return False
        log.warning("figure %s skipped: %s does not exist (run `dvc repro` first)", name, path)
        return True

    if "synth" in which and not missing("synth", luna):
        from pipeline.synth.figure import plot_scan

        written.append(Path(plot_scan(luna, out_dir / "synthetic_scan.png")))
    if "patches" in which and not missing("patches", patches):
        from pipeline.patches.figure import plot_patches

        written.append(Path(plot_patches(patches, out_dir / "patches.png")))
    if "froc" in which:
        src = eval_dir / "fpr" / "froc.png"
        if not missing("froc", src):
            written.append(_copy(src, out_dir / "froc.png"))
            det = eval_dir / "detection" / "froc.png"
            if det.exists():
                written.append(_copy(det, out_dir / "froc_detection.png"))
    if "report" in which and not missing("report", report):
        from pipeline.detect.screenshot import find_chromium, screenshot_html
        from pipeline.errors import PipelineError

        try:
            find_chromium()
        except PipelineError as e:  # the stage still completes: a placeholder that says what to do
            log.warning("figure report: %s; wrote a placeholder", e)
            written.append(_placeholder(out_dir / "report.png", f"No screenshot: {e}.\nOpen {report} in a browser."))
        else:
            written.append(Path(screenshot_html(report, out_dir / "report.png")))
    return written


def _copy(src: Path, dst: Path) -> Path:
    from pipeline.utils import atomic_path

    with atomic_path(dst, suffix=dst.suffix) as tmp:
        shutil.copyfile(src, tmp)
    return dst


def _placeholder(path: Path, text: str) -> Path:
    """A small PNG carrying ``text`` (where a figure cannot be made on this machine)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.utils import atomic_path

    fig = plt.figure(figsize=(8, 1.6), dpi=100)
    try:
        fig.text(0.02, 0.5, text, va="center", fontsize=10, wrap=True)
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", metadata={"Title": text})
    finally:
        plt.close(fig)
    return path


def _run(args: argparse.Namespace) -> int:
    from pipeline.cliutil import check_output_dir

    check_output_dir(args.out)
    which = tuple(w.strip() for w in args.which.split(",") if w.strip())
    for p in make_figures(Path(args.out), which, luna=Path(args.luna), patches=Path(args.patches),
                          eval_dir=Path(args.eval), report=Path(args.report)):
        print(p)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("figures", help="make the README's pictures in docs/ from DVC outputs",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="docs", help="output folder (default: docs)")
    p.add_argument("--which", default=",".join(FIGURES), help=f"comma list of {', '.join(FIGURES)}")
    p.add_argument("--luna", default="data/luna16")
    p.add_argument("--patches", default="data/patches")
    p.add_argument("--eval", default="eval")
    p.add_argument("--report", default="data/detect_test/report.html")
    p.set_defaults(func=_run)
