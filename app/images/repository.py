"""Queries of images and ground truth."""

from collections.abc import Sequence

from sqlalchemy import and_, bindparam, delete, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from app.models import Assignment, GroundTruthObject, Image, ImagePurpose, Mode, User, purpose_of_mode

STUDY = ImagePurpose.study


async def images_of_task(
    session: AsyncSession, task_id: int, purpose: ImagePurpose | None = STUDY
) -> Sequence[Image]:
    """The task's images in their order: study images unless another purpose (None: all) is asked for."""
    query = select(Image).where(Image.task_id == task_id)
    if purpose is not None:
        query = query.where(Image.purpose == purpose)
    return (await session.scalars(query.order_by(Image.position, Image.id))).all()


async def image_by_id(session: AsyncSession, image_id: int) -> Image | None:
    return await session.get(Image, image_id)


async def image_names(session: AsyncSession, task_id: int) -> set[str]:
    return set(await session.scalars(select(Image.name).where(Image.task_id == task_id)))


async def next_image_position(session: AsyncSession, task_id: int) -> int:
    current = await session.scalar(select(func.max(Image.position)).where(Image.task_id == task_id))
    return 0 if current is None else current + 1


async def sha_in_use(session: AsyncSession, sha256: str) -> bool:
    return await session.scalar(select(Image.id).where(Image.sha256 == sha256).limit(1)) is not None


async def ground_truth_of_task(
    session: AsyncSession, task_id: int, purpose: ImagePurpose | None = STUDY
) -> Sequence[GroundTruthObject]:
    """Reference objects of the task's study images unless another purpose (None: all) is asked for."""
    query = (
        select(GroundTruthObject)
        .join(Image, Image.id == GroundTruthObject.image_id)
        .where(Image.task_id == task_id)
    )
    if purpose is not None:
        query = query.where(Image.purpose == purpose)
    order = (Image.position, Image.id, GroundTruthObject.position, GroundTruthObject.id)
    return (await session.scalars(query.order_by(*order))).all()


async def delete_ground_truth(session: AsyncSession, task_id: int) -> None:
    images = select(Image.id).where(Image.task_id == task_id)
    await session.execute(delete(GroundTruthObject).where(GroundTruthObject.image_id.in_(images)))


async def ground_truth_of_image(session: AsyncSession, image_id: int) -> Sequence[GroundTruthObject]:
    query = select(GroundTruthObject).where(GroundTruthObject.image_id == image_id)
    return (await session.scalars(query.order_by(GroundTruthObject.position, GroundTruthObject.id))).all()


def _assigned_to_purpose() -> ColumnElement[bool]:
    """An assignment of the user (bound as user_id) on the image's task whose mode works on its purpose."""
    fits = or_(
        *(
            and_(
                Image.purpose == purpose,
                Assignment.mode.in_([mode.value for mode in Mode if purpose_of_mode(mode) == purpose]),
            )
            for purpose in ImagePurpose
        )
    )
    return exists().where(
        Assignment.task_id == Image.task_id, Assignment.expert_id == bindparam("user_id"), fits
    )


# Built once: building a statement costs more CPU than running it, and tiles ask for this on every request.
_IMAGE_FOR_ADMIN = select(Image).where(Image.id == bindparam("image_id"))
_IMAGE_FOR_EXPERT = _IMAGE_FOR_ADMIN.where(_assigned_to_purpose())


async def visible_image(session: AsyncSession, user: User, image_id: int) -> Image | None:
    """The image when the user may see it, in one query: an admin sees every image, an expert one with an
    assignment on its task whose mode works on its purpose (the rule of studies.get_image)."""
    query = _IMAGE_FOR_ADMIN if user.is_admin else _IMAGE_FOR_EXPERT
    parameters = {"image_id": image_id} if user.is_admin else {"image_id": image_id, "user_id": user.id}
    return (await session.scalars(query, parameters)).first()
