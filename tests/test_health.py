from httpx import AsyncClient


async def test_health_answers_ok_with_a_reachable_database(anonymous: AsyncClient) -> None:
    response = await anonymous.get("/api/v1/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_openapi_lists_the_core_routes(anonymous: AsyncClient) -> None:
    paths = (await anonymous.get("/openapi.json")).json()["paths"]
    for path in (
        "/api/v1/studies",
        "/api/v1/images/{image_id}/annotations",
        "/api/v1/tasks/{task_id}/images",
    ):
        assert path in paths
