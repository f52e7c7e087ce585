"""CPU-bound work (injection protocols, metrics, plots) runs in a worker thread, never on the event loop.

Services take the way to run it as a `Compute` argument, so that the caller, who owns the transaction,
decides what happens to it meanwhile. A request computes with `ComputeDep`: it commits what the request
has done so far (reads, and the token's last-use stamp) before the work starts, so that no transaction
stays open while the work runs (on PostgreSQL an idle transaction holding its locks, on SQLite a read
snapshot that stops checkpoints); the next query opens a new one. Requests compute before they write.
A caller inside a larger transaction of its own (the demo, a command) uses `in_thread`.
"""

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Protocol, TypeVar

from anyio import to_thread
from fastapi import Depends
from sqlalchemy.ext.asyncio import AsyncSession

from app.deps import SessionDep

T = TypeVar("T")


class Compute(Protocol):
    def __call__(self, function: Callable[..., T], /, *args: Any) -> Awaitable[T]:
        """Run `function(*args)` off the event loop and return its result."""


async def in_thread(function: Callable[..., T], /, *args: Any) -> T:
    return await to_thread.run_sync(function, *args)


def committing_first(session: AsyncSession) -> Compute:
    async def compute(function: Callable[..., T], /, *args: Any) -> T:
        await session.commit()
        return await to_thread.run_sync(function, *args)

    return compute


async def request_compute(session: SessionDep) -> Compute:
    return committing_first(session)


ComputeDep = Annotated[Compute, Depends(request_compute)]
