"""Factories that build rows through the service layer and commit, instead of fixture files."""

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image as PILImage
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts import repository as accounts_repository
from app.accounts import service as accounts
from app.accounts.security import make_password_hasher
from app.config import Settings
from app.images.service import NewImage, add_images
from app.models import Assignment, Image, ImagePurpose, Label, Study, Task, TaskKind, User
from app.studies import service as studies
from app.studies.schemas import LabelIn, StudyCreate, TaskCreate

PASSWORD = "correct-horse-battery"


def png_bytes(width: int = 200, height: int = 150, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _maker(app: object) -> async_sessionmaker[AsyncSession]:
    maker: async_sessionmaker[AsyncSession] = app.state.sessionmaker  # type: ignore[attr-defined]
    return maker


def _settings(app: object) -> Settings:
    settings: Settings = app.state.settings  # type: ignore[attr-defined]
    return settings


async def make_user(app: object, name: str, role: str = "expert") -> User:
    hasher = make_password_hasher(1, 64)
    async with _maker(app)() as session, session.begin():
        existing = await accounts_repository.user_by_name(session, name)
        return existing or await accounts.create_user(session, hasher, name, role, PASSWORD)


async def token_for(app: object, name: str) -> str:
    async with _maker(app)() as session, session.begin():
        return await accounts.issue_token(session, name)


@dataclass
class StudySetup:
    study: Study
    task: Task
    labels: list[Label]
    images: list[Image]
    admin: User
    experts: list[User]
    practice: list[Image]


async def make_study(
    app: object,
    *,
    experts: tuple[str, ...] = ("alice", "bob"),
    modes: tuple[str, ...] = ("unaided",),
    image_count: int = 2,
    labels: tuple[str, ...] = ("tumor", "normal"),
    kind: str = "classify",
    practice_count: int = 0,
) -> StudySetup:
    admin = await make_user(app, "admin", "admin")
    users = [await make_user(app, name) for name in experts]
    async with _maker(app)() as session, session.begin():
        study = await studies.create_study(session, StudyCreate(name=f"study-{len(experts)}-{image_count}"))
        task_data = TaskCreate(
            name="task", kind=TaskKind(kind), labels=[LabelIn(name=name) for name in labels]
        )
        task, label_rows = await studies.create_task(session, study, task_data)
        items = [
            NewImage(name=f"img{index}.png", stream=io.BytesIO(png_bytes(seed=index)))
            for index in range(image_count)
        ]
        images = await add_images(session, _settings(app), task, items)
        practice_items = [
            NewImage(
                name=f"practice{index}.png",
                stream=io.BytesIO(png_bytes(seed=100 + index)),
                purpose=ImagePurpose.practice,
            )
            for index in range(practice_count)
        ]
        practice = await add_images(session, _settings(app), task, practice_items) if practice_items else []
        for user in users:
            for mode in modes:
                session.add(Assignment(task_id=task.id, expert_id=user.id, mode=mode))
    return StudySetup(study, task, label_rows, images, admin, users, practice)
