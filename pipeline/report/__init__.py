"""Reports generated from DVC experiments (``python -m pipeline transfer-report``)."""
