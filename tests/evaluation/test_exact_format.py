from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from app.evaluation.exact_format import (
    ExactFormatError,
    ExactObject,
    format_exact,
    index_of,
    parse_exact,
    read_exact,
    to_arrays,
)

QUOTED = (
    'a.png|Neutrophile|{"x1": "207","y1": "236","x2": "235","y2": "256",}|marzahl|2020-01-12 11:54:26.452663'
    "|Participant_3|2020-01-12 13:10:51.396387|f4b0|False|340|265"
)
PLAIN_NEGATIVE = (
    'b.png|Mastzellen|{"x1": -24, "y1": 3598, "x2": 4988, "y2": -5}||2020-01-12 11:54:26'
    "|-1|2020-01-12 13:10:51|uuid-2|True|5000|4000"
)


def test_quoted_vector_with_trailing_comma_and_microseconds() -> None:
    (obj,) = parse_exact(QUOTED).objects

    assert (obj.image, obj.label) == ("a.png", "Neutrophile")
    assert (obj.x1, obj.y1, obj.x2, obj.y2) == (207, 236, 235, 256)
    assert obj.first_editor == "marzahl"
    assert obj.last_editor == "Participant_3"
    assert obj.created == datetime(2020, 1, 12, 11, 54, 26, 452663)
    assert obj.last_edited == datetime(2020, 1, 12, 13, 10, 51, 396387)
    assert (obj.uuid, obj.deleted, obj.width, obj.height, obj.line_no) == ("f4b0", False, 340, 265, 1)


def test_plain_vector_negative_coordinates_no_microseconds_and_missing_editors() -> None:
    (obj,) = parse_exact(PLAIN_NEGATIVE).objects

    assert (obj.x1, obj.y1, obj.x2, obj.y2) == (-24, 3598, 4988, -5)
    assert obj.first_editor is None
    assert obj.last_editor is None
    assert obj.created == datetime(2020, 1, 12, 11, 54, 26)
    assert obj.deleted is True


def test_open_close_lines_of_any_user_count_as_images_in_first_appearance_order() -> None:
    text = "\n".join(
        [
            "[c.png|Participant_3|2020-01-23 18:16:32.746330|2]",
            "[c.png|someone else|2020-01-23 18:10:00|1]",
            "",
            "image name|annotation type|not in image",
            "d.png|Neutrophile|not in image",
            QUOTED,
        ]
    )

    parsed = parse_exact(text)

    assert parsed.image_order == ["c.png", "d.png", "a.png"]
    assert [(v.user, v.opened) for v in parsed.visits] == [("Participant_3", False), ("someone else", True)]
    assert parsed.visits[0].at == datetime(2020, 1, 23, 18, 16, 32, 746330)
    assert parsed.empty_images == ["d.png"]
    assert [(s.line_no, s.reason) for s in parsed.skipped] == [(3, "blank line"), (4, "template header")]
    assert len(parsed.objects) == 1


def test_detection_order_groups_objects_by_first_appearance_of_their_image() -> None:
    second_image_line = QUOTED.replace("a.png", "z.png")
    text = "\n".join(["[a.png|u|2020-01-01 00:00:00|1]", second_image_line, QUOTED])

    ordered = parse_exact(text).detection_order()

    assert [obj.image for obj in ordered] == ["a.png", "z.png"]


@pytest.mark.parametrize(
    ("line", "reason_part"),
    [
        ("a.png|Neutrophile|something", "third is"),
        ("a|b|c|d|e", "expected 11 fields, found 5"),
        (QUOTED.replace('"x1": "207"', '"x1": "2x"'), "x1 is not an integer"),
        (QUOTED.replace('"x1": "207",', ""), "vector lacks x1"),
        (QUOTED.replace("{", "["), "vector is not"),
        (QUOTED.replace("2020-01-12 11:54:26.452663", "12.01.2020"), "timestamp"),
        (QUOTED.replace("|False|", "|maybe|"), "deleted must be True or False"),
        (QUOTED.replace("|340|", "|wide|"), "width is not an integer"),
        ("[a.png|u|2020-01-01 00:00:00|3]", "code must be 1 or 2"),
        ("[a.png|u|2020-01-01 00:00:00|1", "without closing"),
        ("[a.png|u|1]", "needs 4 fields"),
    ],
)
def test_malformed_lines_raise_with_file_and_line_number(line: str, reason_part: str) -> None:
    with pytest.raises(ExactFormatError) as caught:
        parse_exact(f"\n{line}\n", source="export.txt")

    assert caught.value.line_no == 2
    assert str(caught.value).startswith("export.txt:2: ")
    assert reason_part in caught.value.reason


def test_format_exact_round_trips_every_field() -> None:
    objects = parse_exact("\n".join([QUOTED, PLAIN_NEGATIVE])).objects

    written = format_exact(objects)
    again = parse_exact(written).objects

    assert again == objects
    assert [obj.line_no for obj in again] == [1, 2]


def test_round_trip_keeps_a_timestamp_with_zero_microseconds() -> None:
    obj = ExactObject(
        "x.png",
        "L",
        1,
        2,
        3,
        4,
        "a",
        datetime(2020, 1, 1, 0, 0, 0),
        None,
        datetime(2020, 1, 1, 0, 0, 1),
        "u",
        False,
        9,
        9,
    )

    assert parse_exact(format_exact([obj])).objects == [obj]


def test_read_exact_names_the_file_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(QUOTED + "\nbroken\n", encoding="utf-8")

    with pytest.raises(ExactFormatError, match=r"bad\.txt:2: "):
        read_exact(path)


def test_to_arrays_keeps_order_and_encodes_ids() -> None:
    objects = parse_exact("\n".join([QUOTED, PLAIN_NEGATIVE])).objects
    images = index_of(o.image for o in objects)
    labels = index_of(o.label for o in objects)

    arrays = to_arrays(objects, images, labels)

    np.testing.assert_array_equal(arrays.boxes, [[207, 236, 235, 256], [-24, 3598, 4988, -5]])
    np.testing.assert_array_equal(arrays.images, [0, 1])
    np.testing.assert_array_equal(arrays.deleted, [False, True])
    assert arrays.last_edited_seconds[1] - arrays.last_edited_seconds[0] == pytest.approx(-0.396387)
