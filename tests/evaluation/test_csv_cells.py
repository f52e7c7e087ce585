"""CSV downloads: text that a spreadsheet would run as a formula is neutralised; numbers stay numbers."""

import csv
import io

import pytest

from app.evaluation.exports import csv_cell, rows_csv


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1+1", "'+1+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1:A2)", "'@SUM(A1:A2)"),
        ("\tcmd", "'\tcmd"),
        ("\rcmd", "'\rcmd"),
        ("-x", "'-x"),
        ("plain text", "plain text"),
        ("a=b", "a=b"),
        ("-3.5", "-3.5"),
        ("-12", "-12"),
        ("+1e-5", "+1e-5"),
        (-3.5, -3.5),
        (-12, -12),
        (0, 0),
        (None, ""),
        (True, True),
    ],
)
def test_csv_cell(value: object, written: object) -> None:
    assert csv_cell(value) == written


def test_rows_csv_writes_negative_numbers_as_numbers_and_formulas_as_text() -> None:
    text = rows_csv(
        ["image", "x1", "label"], [("=cmd|' /C calc'!A0", -4.25, "@evil"), ("a.png", -7, "tumor")]
    )
    rows = list(csv.reader(io.StringIO(text)))
    assert rows == [
        ["image", "x1", "label"],
        ["'=cmd|' /C calc'!A0", "-4.25", "'@evil"],
        ["a.png", "-7", "tumor"],
    ]
