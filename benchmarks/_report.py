"""Shared by every benchmark script: machine description and atomic section updates of
``docs/benchmarks.md`` (each script owns one ``<!-- name:start --> ... <!-- name:end -->`` block,
so scripts can run in any order without overwriting each other's figures)."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\n"
    "Each section is written by the script it names (`benchmarks/*.py`), which measures our code and a\n"
    "baseline in the same run and reports the ratio. Re-run a script to refresh its section.\n"
)


def machine() -> str:
    """One line naming the machine: CPU model, cores, RAM, GPU (if torch sees one)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gb = float("nan")
    gpu = "no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except (ImportError, RuntimeError, OSError):  # torch missing or broken: the CPU line stands
        gpu = "no GPU"
    return f"{cpu}, {cores} cores, {mem_gb:.0f} GiB RAM, {gpu}"


def update_section(name: str, markdown: str, doc: Path = DOC) -> Path:
    """Replace (or append) the block for ``name`` in ``docs/benchmarks.md``, atomically."""
    doc.parent.mkdir(parents=True, exist_ok=True)
    text = doc.read_text(encoding="utf-8") if doc.exists() else HEADER
    stamp = _dt.date.today().isoformat()
    block = f"<!-- {name}:start -->\n{markdown.rstrip()}\n\n_Run {stamp} on: {machine()}._\n<!-- {name}:end -->"
    pattern = re.compile(rf"<!-- {re.escape(name)}:start -->.*?<!-- {re.escape(name)}:end -->", re.DOTALL)
    text = pattern.sub(lambda _m: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    tmp = doc.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, doc)
    return doc
