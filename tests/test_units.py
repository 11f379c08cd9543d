import pytest

from splitsearch.units import format_bytes, format_count, parse_bytes, parse_count


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("36M", 36_000_000),
        ("5.3G", 5_300_000_000),
        ("1.2e6", 1_200_000),
        ("36_500_000", 36_500_000),
        ("250k", 250_000),
        (" 2T ", 2_000_000_000_000),
        ("0.5M", 500_000),
        (1000, 1000),
    ],
)
def test_parse_count_accepts_the_documented_forms(text, expected):
    assert parse_count(text) == expected


@pytest.mark.parametrize("text", ["36Q", "", "M", "-5M", "0", "1_", "3,5M", "nan", "inf", "1e400"])
def test_parse_count_rejects_anything_else_with_a_message(text):
    with pytest.raises(ValueError, match="count"):
        parse_count(text)


def test_format_count_and_bytes_are_readable():
    assert format_count(36_700_000) == "36.7M"
    assert format_count(5_280_000_000) == "5.28G"
    assert format_count(852) == "852"
    assert format_bytes(3 * 2**20) == "3.00 MiB"
    assert format_bytes(512) == "512 B"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2MB", 2_000_000), ("1.5MiB", 1_572_864), ("512kb", 512_000), ("300000", 300_000), ("64 KiB", 65_536),
     ("1GB", 10**9), ("100B", 100), (4096, 4096)],
)
def test_parse_bytes_accepts_decimal_and_binary_units(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["2XB", "MB", "-1MB", "0MB", "2 M B", "1_MB"])
def test_parse_bytes_rejects_anything_else_with_a_message(text):
    with pytest.raises(ValueError, match="memory size|count"):
        parse_bytes(text)
