"""Text for a person's terminal: passages are data from anywhere, and a terminal obeys what it is sent.

An escape sequence in a passage can recolour, move the cursor, rewrite earlier lines or set the window
title; a bidi override (U+202E) can make `evil.exe` read as `exe.live`. Everything printed for a person
goes through `terminal_text`, which shows such characters as visible escapes (`\\x1b`, `\\u202e`)
instead of sending them. What `--json` prints is left as it is (JSON escapes control characters itself).
"""

from __future__ import annotations

import re

# C0 and C1 control characters and DEL; bidi embeddings, overrides and isolates, and the marks that steer
# them (Arabic letter mark, left-to-right and right-to-left marks); line and paragraph separators.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
_SPACES = re.compile("[\t\r\n\u2028\u2029]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_text(text: object, *, keep_newlines: bool = False) -> str:
    """`text` safe to print: tabs and line breaks become spaces (newlines stay with `keep_newlines`), every
    other control or bidi character a visible escape."""
    s = str(text)
    if keep_newlines:
        s = s.replace("\r\n", "\n")
        parts = s.split("\n")
        return "\n".join(_UNSAFE.sub(_escape, _SPACES.sub(" ", part)) for part in parts)
    return _UNSAFE.sub(_escape, _SPACES.sub(" ", s))
