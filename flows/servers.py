"""`python -m flows ui` (`make ui`): a local Prefect server and MLflow server on 127.0.0.1, on the project's stores.

Prefect keeps its SQLite database in `.prefect/prefect.db` and MLflow its runs in `mlflow.db` with artifacts in
`mlartifacts/` -- the same stores a run without servers writes to, so runs made before the servers were up
show in the UIs too. While they are up, a `make run` in another shell reports to them when it has
`PREFECT_API_URL` and `MLFLOW_TRACKING_URI` set (printed at start). Ctrl-C stops both.
Server logs go to `.tinyfoundry/logs/prefect-server.log` and `.tinyfoundry/logs/mlflow-server.log`.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

log = logging.getLogger("tinyfoundry.servers")

HOST = "127.0.0.1"
PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ServerURLs:
    prefect_ui: str
    """Prefect UI, e.g. http://127.0.0.1:4200"""
    prefect_api: str
    """What PREFECT_API_URL must be for runs to report here, e.g. http://127.0.0.1:4200/api"""
    mlflow: str
    """MLflow UI and tracking URI (MLFLOW_TRACKING_URI), e.g. http://127.0.0.1:5000"""

    def client_env(self) -> dict[str, str]:
        """Environment that makes `make run` / `python -m flows run` report to these servers."""
        return {"PREFECT_API_URL": self.prefect_api, "MLFLOW_TRACKING_URI": self.mlflow}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((HOST, port)) == 0


def _bin(name: str) -> str:
    """The console script beside this interpreter (the venv's), else one on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


def prefect_env(root: Path) -> dict[str, str]:
    """Prefect settings that keep the server's database and home inside the project."""
    home = root / ".prefect"
    return {
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
        "DO_NOT_TRACK": "1",
    }


def prefect_command(port: int) -> list[str]:
    return [_bin("prefect"), "server", "start", "--host", HOST, "--port", str(port)]


def mlflow_command(root: Path, port: int) -> list[str]:
    # --default-artifact-root: experiments created through the server put artifacts in the same mlartifacts/
    # that tasks/tracking.py uses without a server, so both kinds of runs open in the UI.
    return [_bin("mlflow"), "server", "--host", HOST, "--port", str(port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--default-artifact-root", (root / "mlartifacts").as_uri()]


def wait_healthy(url: str, proc: subprocess.Popen, name: str, logfile: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = logfile.read_text(errors="replace")[-2000:] if logfile.exists() else ""
            raise RuntimeError(f"{name} server exited with code {proc.returncode} before it was healthy; "
                               f"last lines of {logfile}:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{name} server not healthy at {url} after {timeout_s:.0f} s; see {logfile}")


def stop(proc: subprocess.Popen, name: str, grace_s: float = 15.0) -> None:
    """Stop a server we started: SIGTERM to its own process group (uvicorn/gunicorn workers), then SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        log.warning("%s server did not stop in %.0f s; killing it", name, grace_s)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass
    log.info("%s server stopped", name)


@contextmanager
def server_process(name: str, cmd: list[str], env: dict[str, str], logfile: Path, health_url: str,
                   cwd: Path, timeout_s: float) -> Iterator[subprocess.Popen]:
    logfile.parent.mkdir(parents=True, exist_ok=True)
    log.info("starting %s server: %s (log %s)", name, " ".join(cmd), logfile)
    with open(logfile, "ab") as out:
        # own session: Ctrl-C in the terminal reaches us only, and stop() can end the server's whole group
        # a client setting left in the shell (e.g. from this command's own banner) must not steer the server
        base = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")}
        proc = subprocess.Popen(cmd, env={**base, **env}, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        started = time.monotonic()
        wait_healthy(health_url, proc, name, logfile, timeout_s)
        log.info("%s server healthy at %s after %.1f s", name, health_url, time.monotonic() - started)
        yield proc
    finally:
        stop(proc, name)


@contextmanager
def running_servers(root: str | Path = PROJECT_ROOT, prefect_port: int = 4200, mlflow_port: int = 5000,
                    timeout_s: float = 120.0) -> Iterator[ServerURLs]:
    """Start both servers on 127.0.0.1 (port 0: a free one), wait until healthy, yield URLs, stop them after."""
    root = Path(root).resolve()
    prefect_port = prefect_port or free_port()
    mlflow_port = mlflow_port or free_port()
    for port, name in ((prefect_port, "Prefect"), (mlflow_port, "MLflow")):
        if port_in_use(port):
            raise RuntimeError(f"port {port} for the {name} server is already in use on {HOST}; "
                               f"stop what holds it or pick another port (--{name.lower()}-port)")
    (root / ".prefect").mkdir(exist_ok=True)
    (root / "mlartifacts").mkdir(exist_ok=True)
    urls = ServerURLs(prefect_ui=f"http://{HOST}:{prefect_port}", prefect_api=f"http://{HOST}:{prefect_port}/api",
                      mlflow=f"http://{HOST}:{mlflow_port}")
    penv = {**prefect_env(root), "PREFECT_UI_API_URL": urls.prefect_api,
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90"}
    menv = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "DO_NOT_TRACK": "1"}
    logs = root / ".tinyfoundry" / "logs"
    with ExitStack() as stack:
        # started one after the other: on 2 shared cores two cold starts at once only slow each other down
        stack.enter_context(server_process("MLflow", mlflow_command(root, mlflow_port), menv,
                                           logs / "mlflow-server.log", f"{urls.mlflow}/health", root, timeout_s))
        stack.enter_context(server_process("Prefect", prefect_command(prefect_port), penv,
                                           logs / "prefect-server.log", f"{urls.prefect_api}/health", root,
                                           timeout_s))
        yield urls


def banner(urls: ServerURLs) -> str:
    env = " ".join(f"{k}={v}" for k, v in urls.client_env().items())
    return (f"\nPrefect UI:  {urls.prefect_ui}\n"
            f"MLflow UI:   {urls.mlflow}\n\n"
            f"To make runs in another shell report here:\n"
            f"  export {env.replace(' ', chr(10) + '  export ')}\n"
            f"  make run\n\n"
            f"Ctrl-C stops both servers.\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows ui", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=PROJECT_ROOT, help="project root holding the stores")
    parser.add_argument("--prefect-port", type=int, default=4200)
    parser.add_argument("--mlflow-port", type=int, default=5000)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each server")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            datefmt="%H:%M:%S")
    # The servers run in their own sessions, so no terminal signal reaches them: Ctrl-C and `kill` must both
    # end up here to stop them. Set explicitly: a shell's background job starts with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with running_servers(args.root, args.prefect_port, args.mlflow_port, args.timeout) as urls:
            print(banner(urls), flush=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                print("\nstopping servers...", flush=True)
    except KeyboardInterrupt:  # while a server was still starting: the context managers stopped what ran
        print("\ninterrupted while starting; servers stopped", flush=True)
        return 130
    except (RuntimeError, TimeoutError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    sys.exit(main())
