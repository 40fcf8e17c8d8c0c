"""``/v1/models`` (the base model and every ready document, OpenAI's model list) and ``/v1/status`` (the worker,
the job counts, the adapters loaded for answering)."""
from __future__ import annotations

from fastapi import APIRouter

from .deps import EngineDep, SupervisorDep, TableDep
from .engine import BASE_MODEL

router = APIRouter(prefix="/v1")


@router.get("/models")
async def models(table: TableDep, engine: EngineDep):
    base = {"id": BASE_MODEL, "object": "model", "created": 0, "owned_by": "liftlm",
            "liftlm": {"model_id": engine.model_id, "kind": "base"}}
    docs = [{"id": j["id"], "object": "model", "created": int(j["created"]), "owned_by": "liftlm",
             "liftlm": {"kind": "document", "title": j["title"], "tokens": j["tokens"]}}
            for j in table.list() if j["status"] == "ready"]
    return {"object": "list", "data": [base, *docs]}


@router.get("/status")
async def status(table: TableDep, engine: EngineDep, supervisor: SupervisorDep):
    return {"model": engine.model_id, "worker": supervisor.info() if supervisor else None, "jobs": table.counts(),
            "loaded_adapters": engine.loaded_adapters(), "max_loaded_adapters": engine.max_loaded,
            "adapter_loads": engine.loads}
