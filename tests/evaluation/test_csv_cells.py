"""CSV downloads: text that a spreadsheet would run as a formula is neutralised; numbers stay numbers."""

import csv
import io
from typing import Any

import pytest

from app.evaluation.exports import csv_cell, rows_csv
from app.evaluation.importer import ImportRequest
from tests.conftest import ClientFactory
from tests.evaluation.test_import import _import, line
from tests.factories import make_user


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


async def test_a_csv_export_neutralises_a_hostile_label_and_image_name(
    app: Any, client_for: ClientFactory
) -> None:
    await make_user(app, "admin", "admin")
    admin = await client_for("admin")
    hostile = line("=HYPERLINK(1).png", "@SUM(1)", (10, 10, 40, 40))
    imported = await _import(app, ImportRequest("S", "T1", "classify", "ground-truth"), hostile)

    exported = await admin.get(
        f"/api/v1/tasks/{imported.task_id}/ground-truth/export", params={"format": "csv"}
    )

    assert exported.status_code == 200
    header, row = list(csv.reader(io.StringIO(exported.text)))
    cells = dict(zip(header, row, strict=True))
    assert cells["image"] == "'=HYPERLINK(1).png"
    assert cells["label"] == "'@SUM(1)"
    assert float(cells["x1"]) == 10
