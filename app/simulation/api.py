"""JSON routes of simulated studies (admin): start a simulation, read the scene the simulator works from."""

from fastapi import APIRouter, Response

from app.deps import AdminUser, HasherDep, SessionDep
from app.errors import NotFound
from app.models import Study
from app.offload import in_thread
from app.schemas_common import PathId
from app.simulation import service
from app.simulation.schemas import PlanOut, PlanQuery, SceneOut, SimulationSetupOut, SimulationStart

router = APIRouter(tags=["simulation"])


@router.post("/studies/{study_id}/simulation", status_code=201)
async def start_simulation(
    study_id: PathId, data: SimulationStart, session: SessionDep, hasher: HasherDep, _admin: AdminUser
) -> SimulationSetupOut:
    """Mark a study simulated and create its simulated experts, their tokens and assignments (admin)."""
    study = await session.get(Study, study_id)
    if study is None:
        raise NotFound(f"no study {study_id}")
    return await service.start(session, hasher, study, data)


@router.get("/tasks/{task_id}/simulation-scene")
async def simulation_scene(task_id: PathId, session: SessionDep, _admin: AdminUser) -> SceneOut:
    """Ground truth with difficulty and the look-alikes of a task's study images, for the simulator (admin)."""
    return await service.scene(session, task_id)


@router.post("/plan")
async def plan_study(query: PlanQuery, _admin: AdminUser) -> PlanOut:
    """Power of the paired test for the concordance gain and the time saving, and caught rates, by repeated
    simulation for each number of experts and images (admin)."""
    return await in_thread(service.plan, query)


@router.post("/plan/figure.svg", response_class=Response, responses={200: {"content": {"image/svg+xml": {}}}})
async def plan_figure(query: PlanQuery, _admin: AdminUser) -> Response:
    """The plan's power vs. experts and images as SVG (admin)."""
    result = await in_thread(service.plan, query)
    return Response(await in_thread(service.plan_figure, result), media_type="image/svg+xml")
