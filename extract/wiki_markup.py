"""Jira wiki markup (Jira Server's and the API v2's rich text) to plain text.

Headings, quotes and panels lose their markers, lists become "- " lines, links keep their
text, code and noformat blocks keep their content, images and colours disappear.
"""

from __future__ import annotations

import re

_BLOCK_MACRO = re.compile(r"\{(code|noformat|quote|panel)(?::[^}]*)?\}(.*?)\{\1\}", re.S)
_INLINE_MACRO = re.compile(r"\{color(?::[^}]*)?\}(.*?)\{color\}", re.S)
_HEADING = re.compile(r"^\s*(?:h[1-6]|bq)\.\s*", re.M)
_LIST_ITEM = re.compile(r"^\s*[*#-]+\s+", re.M)
_TABLE_BARS = re.compile(r"\|\|?")
_LINK = re.compile(r"\[([^|\]\n]*)\|([^\]\n]*)\]")
_BARE_LINK = re.compile(r"\[([^\]\n|]+)\]")
_IMAGE = re.compile(r"![^!\s][^!\n]*!")
_EMPHASIS = re.compile(r"(?<![\w*_+?^~{-])([*_+^~-]|\?\?|\{\{)(?=\S)(.+?)(?<=\S)(\1|\}\})(?![\w*_+?^~}-])")
_RULE = re.compile(r"^\s*-{4,}\s*$", re.M)
_MENTION = re.compile(r"\[~(?:accountid:)?([^\]]+)\]")


def _emphasis(match: re.Match) -> str:
    opening, inner, closing = match.group(1), match.group(2), match.group(3)
    if (opening == "{{") != (closing == "}}"):
        return match.group(0)
    return inner


def wiki_to_text(markup: str) -> str:
    text = _BLOCK_MACRO.sub(lambda m: "\n" + m.group(2).strip("\n") + "\n", markup)
    text = _INLINE_MACRO.sub(r"\1", text)
    text = _IMAGE.sub("", text)
    text = _MENTION.sub(r"@\1", text)
    text = _LINK.sub(lambda m: m.group(1) or m.group(2), text)
    text = _BARE_LINK.sub(r"\1", text)
    text = _RULE.sub("", text)
    text = _HEADING.sub("", text)
    text = _LIST_ITEM.sub("- ", text)
    lines = []
    for line in text.splitlines():
        if line.lstrip().startswith("|"):
            cells = [c.strip() for c in _TABLE_BARS.split(line.strip()) if c.strip()]
            line = " | ".join(cells)
        lines.append(line)
    text = "\n".join(lines)
    for _ in range(2):  # nested emphasis, like *_both_*
        text = _EMPHASIS.sub(_emphasis, text)
    return text.strip()
