"""The ``arbiter`` command: serve, validate, eval (and the DMN TCK runner)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import orjson

from engine.config import Settings
from engine.errors import ArbiterError, ValidationError
from engine.model import compile_model, parse_document
from engine.plan import Plan, Result
from engine.store import empty_guest
from engine.types import JSONObject


def _print(obj: Any) -> None:
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")


def load_plan(path: Path) -> tuple[JSONObject, Plan]:
    definition = parse_document(path.read_bytes(), None)
    return definition, compile_model(definition, key=path.stem)


def split_input(plan: Plan, raw: JSONObject) -> tuple[JSONObject, JSONObject]:
    """``{"guest", "context"}`` for native models; a DMN model's input is its context (inputs by name)."""
    if set(raw) <= {"guest", "context"}:
        return {**empty_guest(None), **raw.get("guest", {})}, raw.get("context", {})
    return empty_guest(None), raw


def run_plan(plan: Plan, guest: JSONObject, context: JSONObject, deadline_ms: int = 50) -> Result:
    if plan.is_async:
        return asyncio.run(plan.evaluate_async(guest, context, deadline_ms))
    return plan.evaluate(guest, context)


async def _store_reachable(settings: Settings) -> bool:
    from engine.store.redis import RedisStore

    store = RedisStore(settings.redis_url or "", timeout_ms=max(settings.redis_timeout_ms, 2_000))
    try:
        return await store.ping()
    finally:
        await store.close()


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from engine import workers

    for flag, env in (("redis", "ARBITER_REDIS_URL"), ("models", "ARBITER_MODELS_DIR"), ("host", "ARBITER_HOST")):
        if getattr(args, flag):
            os.environ[env] = str(getattr(args, flag))
    if args.port:
        os.environ["ARBITER_PORT"] = str(args.port)
    settings = Settings.from_env(workers=args.workers)
    settings.check_bind()
    if settings.workers > 1 and not settings.redis_url:
        print("the embedded store lives in one process: use --redis to run several workers", file=sys.stderr)
        return 2
    if settings.redis_url and not asyncio.run(_store_reachable(settings)):
        # Said once, plainly, rather than a worker's start-up traceback (for every worker, restarted in a loop).
        print(
            f"cannot reach Redis at {settings.redis_url}: start it, or leave out --redis for the embedded store",
            file=sys.stderr,
        )
        return 2
    if settings.uses_demo_keys:
        print(
            "\n*** DEMO KEYS IN USE: admin key 'demo-admin', public key 'demo-public'. "
            "Set ARBITER_ADMIN_KEY / ARBITER_PUBLIC_KEY for anything but a local demo. ***\n",
            file=sys.stderr,
        )
    print(
        f"arbiter on http://{settings.host}:{settings.port} store={'redis' if settings.redis_url else 'embedded'}",
        file=sys.stderr,
    )
    options: dict[str, Any] = {
        "app": "engine.app:app_from_env",
        "factory": True,
        "loop": "uvloop",
        "http": "httptools",
        "access_log": False,
        "log_level": "warning" if args.quiet else "info",
    }
    if settings.workers > 1 and workers.supported():
        # A listening socket per worker, not uvicorn's shared one: see engine/workers.py.
        return workers.supervise(settings.host, settings.port, settings.workers, options)
    uvicorn.run(host=settings.host, port=settings.port, workers=settings.workers, **options)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    path = Path(args.model)
    try:
        definition, plan = load_plan(path)
    except ValidationError as exc:
        _print({"valid": False, "errors": [p.as_dict() for p in exc.problems]})
        return 1
    except ArbiterError as exc:
        _print({"valid": False, "errors": [{"pointer": exc.pointer or "", "message": exc.detail}]})
        return 1
    failures = []
    for i, case in enumerate(definition.get("tests", [])):
        guest, context = split_input(plan, case.get("input", {}))
        result = run_plan(plan, guest, context)
        if result.outputs != case.get("expect"):
            failures.append({"test": case.get("name", i), "expected": case.get("expect"), "got": result.outputs})
    _print(
        {
            "valid": True,
            "nodes": [n.id for n in plan.nodes],
            "tests": len(definition.get("tests", [])),
            "test_failures": failures,
        }
    )
    return 1 if failures else 0


def cmd_eval(args: argparse.Namespace) -> int:
    try:
        _, plan = load_plan(Path(args.model))
        raw = orjson.loads(args.input) if args.input else {}
    except orjson.JSONDecodeError as exc:
        _print({"outputs": None, "errors": [{"error": f"--input is not JSON: {exc}"}]})
        return 2
    except ArbiterError as exc:
        problems = exc.problems if isinstance(exc, ValidationError) else []
        _print({"outputs": None, "errors": [{"error": exc.detail, "problems": [p.as_dict() for p in problems]}]})
        return 1
    guest, context = split_input(plan, raw if isinstance(raw, dict) else {})
    result = run_plan(plan, guest, context)
    out: JSONObject = {"outputs": result.outputs, "errors": result.errors}
    if args.explain:
        out["trace"] = result.trace_json()
    _print(out)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Load an NDJSON (or gzipped) file of guests and orders straight into Redis, with a progress bar."""
    from engine.batch_import import ImportJob, run_import
    from engine.guests import Guests
    from engine.profiles import open_profiles
    from engine.sessions import Limits
    from engine.store.redis import RedisStore

    path = Path(args.file)
    if not path.is_file():
        print(f"no such file: {path}", file=sys.stderr)
        return 2

    def bar(job: ImportJob) -> None:
        done = job.bytes_read / job.total_bytes if job.total_bytes else 1.0
        filled = int(done * 30)
        sys.stderr.write(
            f"\r[{'#' * filled}{'.' * (30 - filled)}] {done:6.1%}  lines {job.lines:,}  "
            f"changed {job.changed:,}  unchanged {job.unchanged:,}  failed {job.failed:,}"
        )
        sys.stderr.flush()

    async def run() -> ImportJob:
        store = RedisStore(args.redis)
        try:
            job = ImportJob()
            await run_import(Guests(open_profiles(store), Limits()), path, job, progress=bar)
            return job
        finally:
            await store.close()

    job = asyncio.run(run())
    sys.stderr.write("\n")
    _print(job.as_json())
    return 0 if job.state == "done" and job.failed == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="arbiter", description="Arbiter real-time decisioning engine")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--redis", help="redis://host:port/db (or redis+cluster://…); default: embedded store")
    serve.add_argument("--models", help="load and publish every model file in this directory")
    serve.add_argument("--workers", type=int)
    serve.add_argument("--quiet", action="store_true")
    serve.set_defaults(func=cmd_serve)
    validate = sub.add_parser("validate", help="validate a model file and run its embedded tests")
    validate.add_argument("model")
    validate.set_defaults(func=cmd_validate)
    ev = sub.add_parser("eval", help="evaluate a model file against one input")
    ev.add_argument("model")
    ev.add_argument("--input", help='JSON: {"guest": …, "context": …}, or a DMN model\'s inputs by name')
    ev.add_argument("--explain", action="store_true", help="include the per-node trace")
    ev.set_defaults(func=cmd_eval)
    imp = sub.add_parser("import", help="batch-import an NDJSON (optionally gzipped) file of guests and orders")
    imp.add_argument("file")
    imp.add_argument("--redis", required=True, help="redis://host:port/db of the Arbiter deployment")
    imp.set_defaults(func=cmd_import)
    tck = sub.add_parser("tck", help="run the DMN TCK conformance cases")
    tck.add_argument("path", help="the TCK directory (holding SUBSETS.csv) or its TestCases folder")
    tck.add_argument("--tier", action="append", help="only these tiers (repeatable): A, A3, B, C, D, D_not_sfeel")
    tck.add_argument("--failures-only", action="store_true", help="print only failing cases and the summary")
    tck.set_defaults(func=lambda a: _tck(a))
    args = parser.parse_args(argv)
    return int(args.func(args))


def _tck(args: argparse.Namespace) -> int:
    from engine import tck

    path = Path(args.path)
    if path.name == "TestCases" and (path.parent / "SUBSETS.csv").is_file():
        path = path.parent
    argv = ["--dir", str(path)] + [x for t in (args.tier or []) for x in ("--tier", t)]
    if args.failures_only:
        argv.append("--failures-only")
    return int(tck.main(argv))


if __name__ == "__main__":
    raise SystemExit(main())
