"""Detection test fixtures (helpers live in detect_helpers.py: a unique module name, so
`from detect_helpers import ...` never collides with another folder's conftest)."""
from __future__ import annotations

from pathlib import Path

import pytest
from detect_helpers import write_model_dirs


@pytest.fixture(scope="session")
def model_root(tmp_path_factory) -> Path:
    return write_model_dirs(tmp_path_factory.mktemp("detect_models"))
