"""transfer-report --readme: the generated table replaces the block between its markers."""
from __future__ import annotations

import pytest


def test_readme_block_is_replaced_between_markers(tmp_path):
    from pipeline.errors import DataError
    from pipeline.report.transfer import BEGIN, END, update_readme

    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{BEGIN}\nold table\n{END}\noutro\n", encoding="utf-8")
    update_readme(readme, "| a |\n|---|\n| 1 |\n")
    assert readme.read_text(encoding="utf-8") == f"intro\n{BEGIN}\n| a |\n|---|\n| 1 |\n{END}\noutro\n"
    update_readme(readme, "| b |\n")  # idempotent block: replaced again, nothing else touched
    assert readme.read_text(encoding="utf-8") == f"intro\n{BEGIN}\n| b |\n{END}\noutro\n"
    bare = tmp_path / "OTHER.md"
    bare.write_text("no markers\n", encoding="utf-8")
    with pytest.raises(DataError, match="OTHER.md"):
        update_readme(bare, "| c |\n")
