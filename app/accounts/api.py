"""JSON routes of accounts."""

from fastapi import APIRouter

from app.accounts import repository, service
from app.accounts.schemas import TokenOut, UserCreate, UserOut
from app.deps import AdminUser, CurrentUser, HasherDep, SessionDep

router = APIRouter(tags=["accounts"])


@router.get("/me")
async def me(user: CurrentUser) -> UserOut:
    """The authenticated user."""
    return UserOut.model_validate(user)


@router.get("/users")
async def list_users(session: SessionDep, _admin: AdminUser) -> list[UserOut]:
    """All users (admin)."""
    return [UserOut.model_validate(user) for user in await repository.list_users(session)]


@router.post("/users", status_code=201)
async def create_user(data: UserCreate, session: SessionDep, hasher: HasherDep, _admin: AdminUser) -> UserOut:
    """Create an admin or expert account (admin)."""
    user = await service.create_user(session, hasher, data.name, data.role, data.password)
    return UserOut.model_validate(user)


@router.post("/me/tokens", status_code=201)
async def new_token(session: SessionDep, user: CurrentUser) -> TokenOut:
    """Issue a new personal API token; it is shown once and stored hashed."""
    return TokenOut(token=await service.issue_token(session, user.name))
