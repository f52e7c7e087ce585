"""Where an object may be placed: a box inside its image, with a label of the task."""

from app.errors import Invalid
from app.models import Image, Label


def check_box(image: Image, x1: float, y1: float, x2: float, y2: float) -> None:
    """A box in level-0 pixels must satisfy 0 ≤ x1 < x2 ≤ width and 0 ≤ y1 < y2 ≤ height."""
    if not (0 <= x1 < x2 <= image.width and 0 <= y1 < y2 <= image.height):
        raise Invalid(
            f"box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) is not a box inside the image "
            f"(0 ≤ x1 < x2 ≤ {image.width}, 0 ≤ y1 < y2 ≤ {image.height})"
        )


def place_named(
    what: str,
    image_name: str,
    label_name: str,
    box: tuple[float, float, float, float],
    images: dict[str, Image],
    labels: dict[str, Label],
) -> tuple[Image, Label]:
    """The image and label of an uploaded object named by image and label; 422 naming `what` otherwise."""
    image = images.get(image_name)
    if image is None:
        raise Invalid(f"{what}: no image named {image_name!r} in this task")
    label = labels.get(label_name)
    if label is None:
        raise Invalid(f"{what}: unknown label {label_name!r}; known: {', '.join(labels)}")
    try:
        check_box(image, *box)
    except Invalid as error:
        raise Invalid(f"{what} on {image_name!r}: {error.message}") from error
    return image, label
