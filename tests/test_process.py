"""Local servers in real child processes, talked to over real HTTP on loopback."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import requests

import notebook_deploy as nd
from notebook_deploy.errors import BundleReferenceError, InputError, ServeError

pytestmark = pytest.mark.integration


def _wait_gone(pid: int, seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_serve_gives_the_in_process_predictions_and_stops(forest_bundle, iris):
    X = iris[0]
    with nd.serve(forest_bundle) as server:
        assert server.running and server.url.startswith("http://127.0.0.1:")
        np.testing.assert_array_equal(server.predict(X), forest_bundle.predict(X))
        np.testing.assert_array_equal(server.predict(X, "predict_proba"), forest_bundle.predict(X, "predict_proba"))
        assert requests.get(server.url + "/readyz").json()["sample_check"] == "match"
        assert "POST /predict HTTP/1.1" in server.logs()
        assert forest_bundle.ref in repr(server) and server.docs_url in server._repr_html_()
        pid = server.pid
    assert not server.running
    assert _wait_gone(pid)


def test_a_pandas_bundle_served_by_reference_answers_dataframes(pipeline_bundle, session_store, customers):
    frame = customers[0]
    with nd.serve("customers", store=session_store) as server:
        np.testing.assert_array_equal(server.predict(frame), pipeline_bundle.predict(frame))
        with pytest.raises(InputError, match="missing feature 'city'"):
            server.predict(frame.drop(columns=["city"]))


def test_bad_input_over_real_http_then_the_next_good_request(forest_bundle):
    with nd.serve(forest_bundle) as server:  # the default limit, 10 MiB
        huge = b'{"instances": [' + b"[1.0, 2.0, 3.0, 4.0]," * 1_000_000 + b"[1, 2, 3, 4]]}"
        assert len(huge) > 20_000_000
        refused = requests.post(server.url + "/predict", data=huge, headers={"content-type": "application/json"})
        assert refused.status_code == 413 and "limit is 10485760 bytes" in refused.json()["detail"]
        for body, status in [(b"{", 400), (b'{"instances": [["a", 1, 2, 3]]}', 422), (b'{"instances": [[1]]}', 422)]:
            response = requests.post(server.url + "/predict", data=body, headers={"content-type": "application/json"})
            assert response.status_code == status and response.json()["detail"]
        good = requests.post(server.url + "/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]})
        assert good.status_code == 200 and good.json() == {"predictions": [0]}


def test_a_declared_body_over_the_limit_is_refused_at_once_without_reading_it(forest_bundle):
    with nd.serve(forest_bundle) as server:
        host, port = server.url.split("//")[1].split(":")
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            raw.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                b"Expect: 100-continue\r\nContent-Length: 10000000000\r\n\r\n"
            )
            answer = b""
            while chunk := raw.recv(65536):  # the server answers and closes, though no body byte was sent
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413 "), answer[:200]  # no "100 Continue" first
        assert b"connection: close" in head.lower() and b"the limit is 10485760 bytes" in body
        assert requests.post(server.url + "/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]}).status_code == 200


def test_headers_over_64_kib_get_431_and_the_server_goes_on(forest_bundle):
    with nd.serve(forest_bundle, workers=2) as server:  # the workers get the same bound
        host, port = server.url.split("//")[1].split(":")
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 1_000_000 + b"\r\n\r\n")
            answer = b""
            with contextlib.suppress(ConnectionResetError):
                while chunk := raw.recv(65536):
                    answer += chunk
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        assert b"over 65536 bytes" in answer
        fine = requests.get(server.url + "/healthz", headers={"X-Fine": "a" * 30_000})
        assert fine.status_code == 200


def test_two_servers_get_two_free_ports(forest_bundle, pipeline_bundle):
    with nd.serve(forest_bundle) as one, nd.serve(pipeline_bundle) as two:
        assert one.url != two.url
        assert requests.get(one.url + "/metadata").json()["name"] == "forest"
        assert requests.get(two.url + "/metadata").json()["name"] == "customers"


def test_an_unknown_reference_fails_before_starting_anything(session_store):
    with pytest.raises(BundleReferenceError, match="no bundle named 'nope'"):
        nd.serve("nope", store=session_store)


def test_a_busy_port_is_reported_with_the_servers_output(forest_bundle):
    with nd.serve(forest_bundle) as first:
        port = int(first.url.rsplit(":", 1)[1])
        with pytest.raises(ServeError, match="(?s)exited with 1.*[Aa]ddress already in use"):
            nd.serve(forest_bundle, port=port)


def test_the_server_stops_when_the_process_that_started_it_exits(forest_bundle, tmp_path):
    """Normal exit (atexit) and a kill -9 of the parent (the child watches it) both end the server."""
    script = textwrap.dedent(
        f"""
        import sys, time, notebook_deploy as nd
        server = nd.serve({str(forest_bundle.path)!r})
        print(server.pid, server.url, flush=True)
        if sys.argv[1] == "wait":
            time.sleep(600)
        """
    )
    for mode in ("exit", "wait"):
        env = dict(os.environ, TMPDIR=str(tmp_path))  # a killed parent cannot remove its server's log folder
        parent = subprocess.Popen([sys.executable, "-c", script, mode], stdout=subprocess.PIPE, text=True, env=env)
        pid, url = parent.stdout.readline().split()
        assert requests.get(url + "/healthz").status_code == 200
        if mode == "wait":
            parent.send_signal(signal.SIGKILL)
        parent.wait(30)
        assert _wait_gone(int(pid)), f"server {pid} outlived its parent ({mode})"
