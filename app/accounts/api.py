"""JSON routes of accounts."""

from fastapi import APIRouter, Response

from app.accounts import repository, service
from app.accounts.schemas import TokenCreate, TokenInfo, TokenOut, UserCreate, UserOut
from app.deps import AdminUser, CurrentUser, HasherDep, SessionDep, SettingsDep
from app.errors import NotFound
from app.schemas_common import PathId

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


async def _set_disabled(session: SessionDep, admin: AdminUser, user_id: int, disabled: bool) -> UserOut:
    user = await repository.user_by_id(session, user_id)
    if user is None:
        raise NotFound(f"no user {user_id}")
    return UserOut.model_validate(await service.set_disabled(session, user, disabled, by=admin))


@router.post("/users/{user_id}/disable")
async def disable_user(user_id: PathId, session: SessionDep, admin: AdminUser) -> UserOut:
    """Disable an account at once: its tokens and sessions stop working, login is refused (admin)."""
    return await _set_disabled(session, admin, user_id, True)


@router.post("/users/{user_id}/enable")
async def enable_user(user_id: PathId, session: SessionDep, admin: AdminUser) -> UserOut:
    """Enable a disabled account again; its unexpired tokens work again (admin)."""
    return await _set_disabled(session, admin, user_id, False)


@router.post("/me/tokens", status_code=201)
async def new_token(
    session: SessionDep, user: CurrentUser, settings: SettingsDep, data: TokenCreate | None = None
) -> TokenOut:
    """Issue a new personal API token; it is shown once, stored hashed, and expires (default CONCORD_TOKEN_DAYS)."""
    days = data.expires_days if data is not None and data.expires_days is not None else settings.token_days
    token = await service.issue_token(session, user.name, days or None)
    return TokenOut(token=token)


@router.get("/me/tokens")
async def list_tokens(session: SessionDep, user: CurrentUser) -> list[TokenInfo]:
    """The own API tokens: id, creation, expiry and last use, never the secret."""
    return [TokenInfo.model_validate(token) for token in await repository.tokens_of(session, user.id)]


@router.delete("/me/tokens/{token_id}", status_code=204)
async def revoke_token(token_id: PathId, session: SessionDep, user: CurrentUser) -> Response:
    """Revoke one of the own API tokens at once (another user's token id answers 404)."""
    await service.revoke_token(session, user, token_id)
    return Response(status_code=204)
