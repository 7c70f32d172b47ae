"""Atlassian Document Format (Jira Cloud's API v3 rich text) to plain text.

Block nodes become paragraphs, list items lines starting with "- " (or "1. "), table rows
lines of cells separated by " | "; mentions, emoji, dates and links keep their visible text.
A document that is not ADF raises :class:`extract.records.RecordError` naming the fault.
"""

from __future__ import annotations

from typing import Any

from extract.records import RecordError

_BLOCKS = {"paragraph", "heading", "blockquote", "codeBlock", "panel", "rule", "mediaSingle", "mediaGroup"}
_CONTAINERS = {"doc", "bulletList", "orderedList", "listItem", "table", "tableRow", "expand", "nestedExpand"}
_INLINE_ATTRS = {"mention": "text", "emoji": "shortName", "status": "text", "inlineCard": "url", "date": "timestamp"}


def _fault(path: str, what: str) -> RecordError:
    return RecordError("broken_adf", f"the ADF document is broken at {path}: {what}")


def _children(node: dict, path: str) -> list:
    content = node.get("content", [])
    if not isinstance(content, list):
        raise _fault(path, "'content' is not a list")
    return content


def _inline(node: Any, path: str) -> str:
    if not isinstance(node, dict) or not isinstance(node.get("type"), str):
        raise _fault(path, "a node is not an object with a 'type'")
    kind = node["type"]
    if kind == "text":
        text = node.get("text")
        if not isinstance(text, str):
            raise _fault(path, "a text node has no string 'text'")
        return text
    if kind == "hardBreak":
        return "\n"
    if kind in _INLINE_ATTRS:
        value = (node.get("attrs") or {}).get(_INLINE_ATTRS[kind], "")
        return str(value)
    return "".join(_inline(child, f"{path}.{i}") for i, child in enumerate(_children(node, path)))


def _block(node: Any, path: str, lines: list[str], indent: str = "") -> None:
    if not isinstance(node, dict) or not isinstance(node.get("type"), str):
        raise _fault(path, "a node is not an object with a 'type'")
    kind = node["type"]
    children = _children(node, path)
    if kind in ("bulletList", "orderedList"):
        for i, item in enumerate(children):
            marker = f"{i + 1}. " if kind == "orderedList" else "- "
            inner: list[str] = []
            for j, part in enumerate(_children(item, f"{path}.{i}") if isinstance(item, dict) else [item]):
                _block(part, f"{path}.{i}.{j}", inner, indent + "  ")
            text = "\n".join(line for line in inner if line)
            lines.append(indent + marker + text.lstrip())
        lines.append("")
    elif kind == "tableRow":
        cells = []
        for i, cell in enumerate(children):
            inner = []
            for j, part in enumerate(_children(cell, f"{path}.{i}") if isinstance(cell, dict) else [cell]):
                _block(part, f"{path}.{i}.{j}", inner)
            cells.append(" ".join(line for line in inner if line))
        lines.append(" | ".join(cells))
    elif kind in _CONTAINERS:
        for i, child in enumerate(children):
            _block(child, f"{path}.{i}", lines, indent)
        if kind == "table":
            lines.append("")
    elif kind in _BLOCKS or kind not in ("text", "hardBreak", *_INLINE_ATTRS):
        text = "".join(_inline(child, f"{path}.{i}") for i, child in enumerate(children))
        if text:
            lines.append(indent + text)
        if not indent:
            lines.append("")
    else:
        lines.append(indent + _inline(node, path))


def adf_to_text(document: Any) -> str:
    if not isinstance(document, dict) or document.get("type") != "doc":
        raise RecordError("broken_adf", "the ADF document is not an object of type 'doc'")
    lines: list[str] = []
    _block(document, "doc", lines)
    return "\n".join(line.rstrip() for line in "\n".join(lines).splitlines()).strip()
