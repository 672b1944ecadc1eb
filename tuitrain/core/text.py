"""Text from files anyone can write (labels, titles), made safe to print."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: object, keep: str = "") -> str:
    """`text` with control characters shown escaped (ESC as \\x1b, a newline as \\n), except those in `keep`:
    labels come from files anyone can write, and must not move the cursor or clear a terminal."""

    def escape(match: re.Match) -> str:
        char = match.group()
        return char if char in keep else char.encode("unicode_escape").decode("ascii")

    return _CONTROL.sub(escape, str(text))
