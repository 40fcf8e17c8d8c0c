"""``liftlm serve``: flags, the safety checks made before anything starts, and uvicorn.

Every LIFT setting is a flag (as for ``internalize``) and becomes the server's default for documents that do
not set it themselves.
"""
from __future__ import annotations

import argparse
import os
import sys

from ..errors import LiftError

TOKEN_ENV = "LIFTLM_API_TOKEN"


def register(subparsers) -> argparse.ArgumentParser:
    from ..batch import add_ray_flags
    from ..options import add_config_flags

    p = subparsers.add_parser(
        "serve", help="an OpenAI-compatible HTTP service: documents in (LIFT in the background), answers out",
        description="Serve LIFT over HTTP: POST /v1/documents trains an adapter in a worker process, "
                    "/v1/chat/completions answers with model = the document id (OpenAI format), / is a web page. "
                    f"Binds to 127.0.0.1; binding elsewhere needs a bearer token in ${TOKEN_ENV}. The LIFT "
                    "settings below are the defaults for documents that do not set their own.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--model", default=None,
                   help="hub id, local model directory, or .gguf file (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--store", default=None,
                   help="adapter store directory (default: $LIFTLM_HOME/adapters, ~/.cache/liftlm/adapters)")
    p.add_argument("--state", default=None,
                   help="folder of the job table (default: $LIFTLM_HOME/serve); a restart with the same folder "
                        "picks up queued and interrupted jobs")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: the best available)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest request body in MB (default: 20)")
    p.add_argument("--max-loaded-adapters", type=int, default=8,
                   help="ready adapters kept loaded on the model at once, least recently used out first (default: 8)")
    p.add_argument("--max-attempts", type=int, default=3,
                   help="a job whose worker dies this many times while training it fails (default: 3)")
    p.add_argument("--access-log", action="store_true", help="log every request")
    r = p.add_argument_group("training on a Ray cluster")
    add_ray_flags(r, "train each document as a Ray task, several at once")
    r.add_argument("--ray-jobs", type=int, default=None,
                   help="documents training at once (default: as many as the cluster's CPUs/GPUs fit)")
    add_config_flags(p)
    return p


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ray_settings(args) -> dict:
    """The ``--ray*`` flags, checked (Ray installed, the address answering) before anything starts."""
    flags = ("ray_cpus", "ray_gpus", "ray_retries", "ray_jobs")
    if args.ray is None:
        given = [f for f in flags if getattr(args, f) is not None]
        if given:
            raise LiftError(f"--{given[0].replace('_', '-')} goes with --ray")
        return {}
    from ..batch import check_ray_resources, probe_ray, ray_module

    ray_module()
    out = {"ray": args.ray, "ray_cpus": 1 if args.ray_cpus is None else args.ray_cpus,
           "ray_gpus": 0 if args.ray_gpus is None else args.ray_gpus,
           "ray_retries": 3 if args.ray_retries is None else args.ray_retries,
           "ray_jobs": 0 if args.ray_jobs is None else args.ray_jobs}
    check_ray_resources(out["ray_cpus"], out["ray_gpus"], out["ray_retries"])
    if out["ray_cpus"] == 0 and out["ray_gpus"] == 0:
        raise LiftError("--ray-cpus and --ray-gpus are both 0: a training task needs a CPU or a GPU")
    if out["ray_jobs"] < 0:
        raise LiftError(f"--ray-jobs must be 0 (as many as fit) or more (got {out['ray_jobs']})")
    probe_ray(args.ray or None)
    return out


def serve_settings(args):
    from ..models import liftlm_home
    from ..options import config_from_args
    from .settings import ServeSettings

    if not 0 < args.port < 65536:
        raise LiftError(f"--port must be in 1..65535 (got {args.port})")
    if args.max_upload_mb <= 0:
        raise LiftError(f"--max-upload-mb must be positive (got {args.max_upload_mb})")
    if args.max_loaded_adapters < 1:
        raise LiftError(f"--max-loaded-adapters must be at least 1 (got {args.max_loaded_adapters})")
    if args.max_attempts < 1:
        raise LiftError(f"--max-attempts must be at least 1 (got {args.max_attempts})")
    ray = ray_settings(args)
    token = os.environ.get(TOKEN_ENV) or None
    if not is_loopback(args.host) and not token:
        raise LiftError(f"--host {args.host} lets other machines in: set a bearer token in ${TOKEN_ENV} first "
                        "(clients send it as Authorization: Bearer ...), or bind to 127.0.0.1")
    config = config_from_args(args)
    if config.finetune != "lora":
        raise LiftError("--finetune: the service serves LoRA adapters (named adapters on one model); use lora")
    state = args.state or str(liftlm_home() / "serve")
    return ServeSettings(model=args.model, device=args.device, store=args.store, state=state, defaults=config,
                         token=token, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
                         max_loaded_adapters=args.max_loaded_adapters, max_attempts=args.max_attempts, **ray)


def run(args) -> int:
    import uvicorn

    from .app import create_app

    settings = serve_settings(args)
    from ..models import convert_gguf, resolve_model_id

    kind, _, path = resolve_model_id(args.model)  # an unknown model is one clear error before anything starts
    if kind == "gguf":
        convert_gguf(path)  # once, here: not by the web process and the worker at the same time
    app = create_app(settings)
    print(f"liftlm serve: http://{args.host}:{args.port}/ (model {args.model or 'embedded'}, state {settings.state}"
          f"{', bearer token required' if settings.token else ''})", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", access_log=args.access_log,
                timeout_graceful_shutdown=5)
    return 0
