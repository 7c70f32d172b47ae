from __future__ import annotations

import hashlib

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
