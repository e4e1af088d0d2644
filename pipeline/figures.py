"""``python -m pipeline figures``: the pictures the README shows, made from DVC outputs.

* ``docs/synthetic_scan.png``  axial/coronal slices of synthetic scans, annotated nodules circled
  (from ``data/luna16``; made by ``pipeline.synth.figure.plot_scan``);
* ``docs/patches.png``         2D / 2.5D / 3D-centre-slice patches of a few candidates with labels
  (from ``data/patches``; ``pipeline.patches.figure.plot_patches``);
* ``docs/froc.png``            the FROC curve of the default run (copied from ``eval/``);
* ``docs/report.png``          a headless-Chromium screenshot of the detection HTML report
  (from ``data/detect_test/report.html``; ``pipeline.detect.screenshot.screenshot_html``).

Each figure is skipped with a message when its input does not exist yet (run ``dvc repro`` first).
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
            shutil.copyfile(src, out_dir / "froc.png")
            written.append(out_dir / "froc.png")
            det = eval_dir / "detection" / "froc.png"
            if det.exists():
                shutil.copyfile(det, out_dir / "froc_detection.png")
                written.append(out_dir / "froc_detection.png")
    if "report" in which and not missing("report", report):
        from pipeline.detect.screenshot import screenshot_html

        written.append(Path(screenshot_html(report, out_dir / "report.png")))
    return written


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
