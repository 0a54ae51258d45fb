"""`python -m flows run` runs the pipeline under Prefect; `serve` serves it on a cron schedule;
`ui` starts local Prefect and MLflow servers (flows/servers.py)."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import flows  # noqa: F401 — sets the project's Prefect defaults before prefect is imported
from tasks.atomic import atomic_write_json


def run(args) -> int:
    from tasks.lock import ProjectBusy, project_lock

    root = Path(args.root).resolve()
    try:
        # taken before Prefect starts, so a second run fails at once; the flow and its stages inherit it
        with project_lock(root):
            return run_locked(root, args)
    except ProjectBusy as e:
        print(f"tinyfoundry: {e}", file=sys.stderr)
        return 3


def run_locked(root: Path, args) -> int:
    from prefect import tags

    from flows.pipeline import pipeline
    from tasks.config import ConfigError, ensure_library_checks, load_config

    try:
        cfg = load_config(root / "params.yaml")
        ensure_library_checks(cfg, root)  # before any stage: the stages' own checks then find it done
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    t0 = time.time()
    flow = pipeline.with_options(name=cfg.flow.name)
    with tags("tinyfoundry"):
        summary = flow(root=str(root), force=args.force, started=time.strftime("%Y%m%d-%H%M%S"))
    summary["process_wall_seconds"] = round(time.time() - t0, 2)
    record = root / ".tinyfoundry" / "runs" / f"{summary['flow_run_name']}.json"
    atomic_write_json(record, summary)  # the report itself was written by the flow (flows/pipeline.py)
    print_summary(root, summary)
    return 0


def print_summary(root: Path, s: dict) -> None:
    from tasks.report import run_summary

    print()
    print(f"tinyfoundry: pipeline finished in {s['wall_seconds']:.0f} s "
          f"({len(s['ran'])} stages ran, {len(s['skipped'])} up to date; "
          f"orchestration overhead {100 * s['overhead_fraction']:.1f}% of the flow's wall time)")
    print(run_summary(root, s.get("report") or {}), end="")
    print(f"  MLflow run:  {s['mlflow_run_id']}   Prefect flow run: {s['flow_run_name']} ({s['prefect_flow_run_id']})")
    for error in s.get("tracking_errors", []):
        print(f"  warning: MLflow logging failed: {error}")


def build_deployment(root: Path):
    """The flow as a Prefect deployment on params' `flow.schedule_cron`, running this project."""
    from flows.pipeline import pipeline
    from tasks.config import load_config

    cfg = load_config(root / "params.yaml")
    return pipeline.with_options(name=cfg.flow.name).to_deployment(
        name=cfg.flow.name, cron=cfg.flow.schedule_cron, parameters={"root": str(root)}, tags=["tinyfoundry"],
        description="tinyfoundry: the DVC pipeline of this project, stages DVC reports out of date")


def serve(args) -> int:
    from prefect import serve as prefect_serve

    root = Path(args.root).resolve()
    deployment = build_deployment(root)
    print(f"Serving deployment {deployment.name!r} on cron {deployment.schedules[0].schedule.cron!r}; "
          "Ctrl-C stops it. Runs show in the Prefect UI (`make ui`).")
    prefect_serve(deployment)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="run the whole pipeline (stages DVC reports out of date)")
    p_run.add_argument("--root", default=".")
    p_run.add_argument("--force", action="store_true", help="rerun every stage even if up to date")
    p_serve = sub.add_parser("serve", help="serve the flow as a deployment on params' flow.schedule_cron")
    p_serve.add_argument("--root", default=".")
    sub.add_parser("ui", help="start local Prefect and MLflow servers (127.0.0.1)")
    args, rest = parser.parse_known_args(argv)
    if args.command == "ui":
        from flows.servers import main as servers_main

        return servers_main(rest) or 0
    return {"run": run, "serve": serve}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
