"""Every block of the seed guides has a row in the registry, and every row names a test that exists."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

from tests.e2e.conftest import ROOT
from tests.seeds.blocks import all_blocks
from tests.seeds.registry import ROWS


@cache
def functions_in(path: str) -> frozenset[str]:
    tree = ast.parse((ROOT / path).read_text())
    return frozenset(node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef))


def test_every_block_of_the_five_guides_has_exactly_one_row_with_its_current_text() -> None:
    blocks = all_blocks()
    assert len(blocks) >= 80
    rows = {(r.seed, r.index): r for r in ROWS}
    assert len(rows) == len(ROWS), "two rows for one block"
    missing = [b for key, b in blocks.items() if key not in rows]
    assert not missing, "blocks without a row:\n" + "\n".join(
        f"{b.seed} #{b.index} line {b.line}: {b.text}" for b in missing
    )
    changed = [b for key, b in blocks.items() if rows[key].digest != b.digest]
    assert not changed, "blocks changed since their row was written (check the test, then the digest):\n" + "\n".join(
        f"{b.seed} #{b.index} line {b.line} now {b.digest}:\n{b.text}" for b in changed
    )
    gone = sorted(set(rows) - set(blocks))
    assert not gone, f"rows for blocks the guides no longer have: {gone}"


def test_every_row_names_tests_that_exist_and_gives_a_reason() -> None:
    for row in ROWS:
        assert row.tests and row.reason.strip(), row
        for node_id in row.tests:
            path, _, name = node_id.partition("::")
            assert (ROOT / path).is_file(), f"{row.seed} #{row.index}: no file {path}"
            assert name in functions_in(path), f"{row.seed} #{row.index}: no test {node_id}"
            assert name.startswith("test_")


def test_the_guides_parse_into_the_expected_blocks() -> None:
    # A block inside a numbered list is dedented by its fence's indentation; the language is kept
    blocks = all_blocks()
    assert blocks[("001", 0)].text == "pip install -r requirements.txt\n"
    assert blocks[("004", 4)].language == "powershell"
    assert blocks[("002", 0)].language == ""
    assert {b.seed for b in blocks.values()} == {"000", "001", "002", "003", "004"}
    assert Path(__file__).parent.joinpath("guides").is_dir()
