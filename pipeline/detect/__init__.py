"""Whole-scan nodule detection: segmenter sliding window -> components -> NMS -> classifier.

Public API::

    DetectConfig                      # the ``infer:`` params section
    detect_scan(scan, seg_model, seg_cfg, cls_model, cls_cfg, cfg, device) -> ScanFindings
    run(paths, model, out_dir, cfg, *, segmenter=None, save_maps=False, overwrite=False,
        scheduler=None, progress=True) -> DetectResult     # python -m pipeline detect
    run_infer(luna_root, model, out_dir, cfg, *, segmenter=None) -> DetectResult  # infer stage
    screenshot_html(html_path, png_path)                    # headless Chromium
"""
from pipeline.detect.config import DetectConfig

__all__ = ["DetectConfig", "DetectResult", "ScanFindings", "detect_scan", "run", "run_infer", "screenshot_html"]


def __getattr__(name):  # lazy: torch / MONAI only when used
    if name in ("detect_scan", "ScanFindings"):
        from pipeline.detect import scan

        return getattr(scan, name)
    if name == "run_infer":
        from pipeline.detect import infer

        return infer.run_infer
    if name in ("run", "DetectResult"):
        from pipeline.detect import batch

        return getattr(batch, name)
    if name == "screenshot_html":
        from pipeline.detect.screenshot import screenshot_html

        return screenshot_html
    raise AttributeError(name)
