"""`python -m flows ui` (flows/servers.py): both servers on 127.0.0.1, healthy, on the project's stores, and gone
after Ctrl-C or `kill`."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from flows.servers import HOST, banner, free_port, port_in_use, running_servers, ServerURLs

ROOT = Path(__file__).resolve().parents[1]


def test_port_in_use_is_refused_before_anything_starts(tmp_path):
    with socket.socket() as s:
        s.bind((HOST, 0))
        s.listen()
        busy = s.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"port {busy} for the MLflow server is already in use"):
            with running_servers(tmp_path, 0, busy):
                pass
    assert not (tmp_path / ".tinyfoundry" / "logs").exists()  # nothing was started


def test_banner_gives_the_client_env():
    urls = ServerURLs("http://127.0.0.1:4200", "http://127.0.0.1:4200/api", "http://127.0.0.1:5000")
    text = banner(urls)
    assert "export PREFECT_API_URL=http://127.0.0.1:4200/api" in text
    assert "export MLFLOW_TRACKING_URI=http://127.0.0.1:5000" in text and "Ctrl-C" in text


# extended: ~35 s each; make test's end-to-end run starts and stops the same servers (running_servers)
@pytest.mark.slow
@pytest.mark.extended
@pytest.mark.parametrize("stop_signal", [pytest.param(signal.SIGINT, id="ctrl-c"), pytest.param(signal.SIGTERM, id="kill")])
def test_flows_ui_starts_both_servers_and_a_signal_stops_them(tmp_path, stop_signal):
    prefect_port, mlflow_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    proc = subprocess.Popen([sys.executable, "-m", "flows", "ui", "--root", str(tmp_path),
                             "--prefect-port", str(prefect_port), "--mlflow-port", str(mlflow_port)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            out.append(line)
            if "Ctrl-C stops both servers" in line:
                break
        text = "".join(out)
        assert f"export PREFECT_API_URL=http://127.0.0.1:{prefect_port}/api" in text, text[-3000:]
        assert urllib.request.urlopen(f"http://127.0.0.1:{prefect_port}/api/health").read() == b"true"
        assert urllib.request.urlopen(f"http://127.0.0.1:{mlflow_port}/health").read() == b"OK"
        # the project's stores, not ~/.prefect or ./mlruns
        assert (tmp_path / ".prefect" / "prefect.db").exists() and (tmp_path / "mlflow.db").exists()
        # bound to loopback only: the same port on another local address refuses connections
        other = socket.gethostbyname(socket.gethostname())
        if not other.startswith("127."):
            with socket.socket() as s:
                s.settimeout(2)
                assert s.connect_ex((other, prefect_port)) != 0 and s.connect_ex((other, mlflow_port)) != 0
    finally:
        proc.send_signal(stop_signal)
        rc = proc.wait(timeout=60)
    assert rc == 0
    assert not port_in_use(prefect_port) and not port_in_use(mlflow_port)
