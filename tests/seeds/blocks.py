"""Every fenced code block of the five seed operators' guides, parsed from the copies in guides/.

The copies are what the tests run; `test_registry.py` compares them with `/work/shared/seeds/`
when that folder exists, so a changed guide is noticed there as well as in the registry.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

GUIDES = Path(__file__).resolve().parent / "guides"
SHARED_GUIDES = Path("/work/shared/seeds")

_OPEN = re.compile(r"^(?P<indent>[ \t]*)```(?P<language>[\w+-]*)[ \t]*$")
_CLOSE = re.compile(r"^[ \t]*```[ \t]*$")


@dataclass(frozen=True)
class Block:
    seed: str  # "000" .. "004", the guide file's prefix
    index: int  # 0-based, in the order the guide shows them
    language: str  # as written after the fence; "" when none
    line: int  # 1-based line of the block's first text line in the guide
    text: str  # dedented by the fence's own indentation

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:10]

    @property
    def key(self) -> tuple[str, int]:
        return (self.seed, self.index)


def guide_files() -> list[Path]:
    return sorted(GUIDES.glob("00[0-4]_*.txt"))


def parse(path: Path) -> list[Block]:
    seed = path.name[:3]
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _OPEN.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent = len(opening["indent"])
        end = i + 1
        while end < len(lines) and not _CLOSE.match(lines[end]):
            end += 1
        body = [line[indent:] if not line[:indent].strip() else line for line in lines[i + 1 : end]]
        blocks.append(Block(seed, len(blocks), opening["language"], i + 2, "\n".join(body).rstrip() + "\n"))
        i = end + 1
    return blocks


@cache
def all_blocks() -> dict[tuple[str, int], Block]:
    return {b.key: b for path in guide_files() for b in parse(path)}


def block(seed: str, index: int) -> Block:
    return all_blocks()[(seed, index)]
