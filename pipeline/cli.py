"""The one CLI: ``python -m pipeline <stage> ...`` (also the ``lung-pipeline`` script).

Each stage package owns a small ``<package>/cli.py`` with ``register(subparsers)``
that adds its subcommand and sets ``func(args) -> int``. Those modules import heavy
libraries (torch, SimpleITK, MONAI) lazily inside ``func``, so ``--help`` is instant.
Only this layer reads ``params.yaml``; stage cores get typed configs.

Errors: a :class:`~pipeline.errors.PipelineError` (bad input, bad option, locked output folder) or an
``OSError`` (permission denied, disk full, ...) is printed as ONE line ``error: <path>: <reason>`` with
exit code 1 (``-v`` also logs the OS error's traceback); Ctrl-C gives ``error: interrupted``, exit 130.
Any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

# subcommand modules, in pipeline order
STAGE_MODULES = [
    "pipeline.synth.cli",
    "pipeline.preprocess.cli",
    "pipeline.patches.cli",
    "pipeline.train.cli",
    "pipeline.evaluate.cli",
    "pipeline.detect.cli",
    "pipeline.measure.cli",
    "pipeline.preset",
    "pipeline.figures",
    "pipeline.report.cli",
    "pipeline.explain.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="Lung-nodule CT pipeline (LUNA16 format): synth, preprocess, patches, train, "
        "evaluate/froc, detect, preset.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name in STAGE_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # stage not built yet
            if exc.name and name.startswith(exc.name):
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from pipeline.errors import PipelineError

    try:
        rc = args.func(args)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the file system said no (permissions, disk full, a path that vanished)
        logging.getLogger("pipeline").debug("OS error", exc_info=True)
        print(f"error: {os_error_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


def os_error_line(exc: OSError) -> str:
    """``"<path>: <reason>"`` on one line for an ``OSError`` (the path when the OS named one)."""
    reason = " ".join(str(exc.strerror or exc or type(exc).__name__).split())
    paths = [str(f) for f in (exc.filename, exc.filename2) if f is not None]
    return f"{' -> '.join(paths)}: {reason}" if paths else reason


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
