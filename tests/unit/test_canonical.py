import math

import pytest

from rlm_rs.canonical import build_offsets, canonical_json, canonicalize_text, checksum_text


def test_canonical_text_is_nfc_with_newlines_and_no_bom() -> None:
    raw = "\ufeffcafe\u0301\r\nline\rend"
    assert canonicalize_text(raw) == "caf\u00e9\nline\nend"
    assert canonicalize_text(canonicalize_text(raw)) == canonicalize_text(raw)


def test_checksum_normalizes_before_hashing() -> None:
    assert checksum_text("cafe\u0301") == checksum_text("caf\u00e9")
    assert checksum_text("abc") == ("sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")


def test_offsets_checkpoints_map_chars_to_bytes() -> None:
    text = "é" * 25 + "a" * 10
    offsets = build_offsets(text, "d1", interval=10)
    assert offsets["checkpoints"] == [
        {"char": 0, "byte": 0}, {"char": 10, "byte": 20},
        {"char": 20, "byte": 40}, {"char": 30, "byte": 55},
    ]  # fmt: skip
    assert offsets["char_length"] == 35
    assert offsets["byte_length"] == len(text.encode())


def test_canonical_json_sorts_and_refuses_nan() -> None:
    assert canonical_json({"b": 1, "a": [1, "é"]}) == '{"a":[1,"é"],"b":1}'
    with pytest.raises(ValueError):
        canonical_json({"x": math.nan})
