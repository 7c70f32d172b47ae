from __future__ import annotations

import hashlib
import random
import re
import unicodedata

import pytest

from vectorize.errors import ConfigError
from vectorize.text import TextTemplate, clean_text, content_hash


def test_clean_text_normalises_unicode_to_nfc():
    decomposed = "Cafe\u0301"
    assert clean_text(decomposed) == "Caf\u00e9"


def test_clean_text_removes_control_characters_and_collapses_whitespace():
    raw = "  Fix\x00 the\tbuild \x1b[0m  now \r\n\r\n\n\n second   paragraph\x7f  "
    assert clean_text(raw) == "Fix the build [0m now\n\nsecond paragraph"


def test_clean_text_keeps_single_line_breaks():
    assert clean_text("subject\nline two  \n  line three") == "subject\nline two\nline three"


def _clean_by_the_rules(text: str) -> str:
    """The rules of ``clean_text``, each as the regular expression that states it."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]", "", text)
    text = re.sub(r"[^\S\n]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    return re.sub(r"\n\s*\n+", "\n\n", text).strip()


def test_clean_text_follows_its_rules_on_every_kind_of_space_and_control_character():
    # the text is hashed: a change in what clean_text gives would make every stored row look changed
    spaces = [chr(c) for c in range(0x110000) if chr(c).isspace() or unicodedata.category(chr(c)) == "Cc"]
    pieces = [*spaces, "a", "b", "  ", "\r\n", "\n\n\n", " \n ", "e\u0301", "\u200b", "\ufeff", "\ud800", "é"]
    rng = random.Random(7)
    for _ in range(5_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 16)))
        assert clean_text(text) == _clean_by_the_rules(text), repr(text)
    for code in range(0x3001):  # U+3000 is the last space
        text = f"a {chr(code)} b\n{chr(code)}\n"
        assert clean_text(text) == _clean_by_the_rules(text), hex(code)


def test_content_hash_is_sha256_of_the_exact_text():
    assert content_hash("héllo") == hashlib.sha256("héllo".encode()).hexdigest()


def test_template_from_bare_field_and_escapes():
    assert TextTemplate.parse("body").fields == ("body",)
    template = TextTemplate.parse("{title}\\n\\n{body}")
    assert template.fields == ("title", "body")
    assert template.render({"title": "T", "body": "B"}) == "T\n\nB"


@pytest.mark.parametrize("bad", ["{title", "{0}", "{a.b}", "{}"])
def test_bad_templates_are_config_errors(bad):
    with pytest.raises(ConfigError):
        TextTemplate.parse(bad)
