"""Two replicas behind the router we ship (k8s/base/router): its rendered configuration on a real
nginx, in front of two real talkserve servers. A conversation's requests, its cancel included,
reach one replica whichever connection they come on (barge-in works with several replicas); a
draining replica's streams finish while new requests go to the other. And without the router
(a per-connection balancer, as a ClusterIP Service is), the client reconnects rather than retrying
on the channel pinned to the replica that is draining."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from helpers import LONG_QUESTION, Collector, metric
from test_k8s import by_kind, render, workload

from talkserve.client import NO_RETRY, TalkClient, TalkError
from talkserve.runtime import drain
from talkserve.server.serve import Ports, Server

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parents[2]
NGINX = ROOT / ".tools" / "nginx" / "usr" / "sbin" / "nginx"
# The image's main nginx.conf (nginxinc/nginx-unprivileged) around the rendered conf.d file, with
# its temp paths under the prefix.
MAIN = """worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {prefix}/client_temp;
    proxy_temp_path {prefix}/proxy_temp;
    fastcgi_temp_path {prefix}/fastcgi_temp;
    uwsgi_temp_path {prefix}/uwsgi_temp;
    scgi_temp_path {prefix}/scgi_temp;
    access_log off;
    include {prefix}/conf.d/*.conf;
}}
"""


def rendered_router() -> tuple[str, dict[str, str], list[str]]:
    """(the conf.d template, the router container's env, its nginx args) as the cpu overlay renders them."""
    docs = render("cpu")
    template = next(c for c in by_kind(docs, "ConfigMap") if c["metadata"]["name"].startswith("talkserve-router"))
    container = workload(docs, "Deployment", "router")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value", "talkserve") for e in container["env"]}  # fieldRef: the namespace
    return template["data"]["talkserve.conf.template"], env, container["args"]


def local_config(template: str, env: dict[str, str], servers: list[int], port: int) -> str:
    """The template as the image's envsubst renders it, and what differs on this machine, nothing
    else: no cluster DNS (the resolver line) and the headless Service's ready pods as static servers."""
    text = re.sub(r"\$\{(TALKSERVE_[A-Z_]+)\}", lambda m: env[m[1]], template)
    text, n_resolver = re.subn(r"(?m)^resolver .*;\n", "", text)
    pods = "".join(f"    server 127.0.0.1:{p};\n" for p in servers)
    text, n_server = re.subn(r"(?m)^\s*server \S+:8001 resolve;\n", pods, text)
    text, n_listen = re.subn(r"listen 8001 http2;", f"listen 127.0.0.1:{port} http2;", text)
    assert (n_resolver, n_server, n_listen) == (1, 1, 1)
    return text


class Router:
    def __init__(self, prefix: Path, servers: list[int]):
        self.prefix, self.port = prefix, Ports.free().grpc
        self.template, self.env, args = rendered_router()
        assert args[0] == "nginx"
        (prefix / "conf.d").mkdir(parents=True)
        (prefix / "nginx.conf").write_text(MAIN.format(prefix=prefix))
        self.route(servers)
        self.proc = subprocess.Popen([str(NGINX), "-p", str(prefix), "-c", str(prefix / "nginx.conf"), *args[1:]],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            assert self.proc.poll() is None and time.monotonic() < deadline, (prefix / "error.log").read_text()
            time.sleep(0.1)
        self.url = f"127.0.0.1:{self.port}"

    def route(self, servers: list[int]) -> None:
        (self.prefix / "conf.d" / "talkserve.conf").write_text(local_config(self.template, self.env, servers,
                                                                            self.port))

    def reload(self, servers: list[int]) -> None:
        """What the router does when the headless Service's ready pods change (here: by hand)."""
        self.route(servers)
        subprocess.run([str(NGINX), "-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf"), "-s", "reload"],
                       check=True)
        time.sleep(1)  # new workers take the new configuration; old ones finish their streams

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


@pytest.fixture(scope="module")
def replicas(built, tmp_path_factory):
    if not NGINX.is_file():
        pytest.fail(f"{NGINX} is missing: run `bash k8s/tools.sh` (the README's test command does)")
    _, current = built
    root = tmp_path_factory.mktemp("replicas")
    servers = [Server(current, Ports.free(), log=root / f"replica-{i}.log").start() for i in range(2)]
    yield servers
    for s in servers:
        s.stop()


@pytest.fixture
def router(replicas, tmp_path):
    r = Router(tmp_path / "nginx", [s.ports.grpc for s in replicas])
    yield r
    r.stop()


def cancels(server) -> float:
    return metric(server, "nv_inference_request_success", model="cancel")


def owner(replicas, router, conversation: str):
    """The replica the router sends `conversation` to (a cancel is cheap and counted)."""
    before = [cancels(s) for s in replicas]
    with TalkClient(router.url) as client:
        client.cancel(conversation)
    deadline = time.monotonic() + 5  # Triton counts a request once its response is released
    while not (moved := [s for s, b in zip(replicas, before, strict=True) if cancels(s) > b]):
        assert time.monotonic() < deadline, "no replica counted the cancel"
        time.sleep(0.05)
    assert len(moved) == 1
    return moved[0]


def test_a_conversation_stays_on_one_replica_whatever_connection_it_comes_on(replicas, router):
    homes = {}
    for i in range(16):
        cid = f"conversation-{i}"
        homes[cid] = {owner(replicas, router, cid).ports.grpc for _ in range(3)}  # a new connection each time
    assert all(len(h) == 1 for h in homes.values())  # every request of a conversation: one replica
    assert {p for h in homes.values() for p in h} == {s.ports.grpc for s in replicas}  # conversations spread
    before = [cancels(s) for s in replicas]
    raw = grpcclient.InferenceServerClient(router.url)  # no conversation-id header: spread per request
    for _ in range(16):
        tensor = grpcclient.InferInput("conversation_id", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([b"anonymous"], dtype=np.object_))
        raw.infer("cancel", [tensor])
    raw.close()
    assert all(cancels(s) > b for s, b in zip(replicas, before, strict=True))


def test_barge_in_through_the_router_reaches_the_replica_that_streams(replicas, router):
    home = owner(replicas, router, "barge-router")
    streamed = metric(home, "talkserve_chunks_streamed_total")
    stream = Collector(router.url, LONG_QUESTION, "barge-router")
    stream.start()
    assert stream.first.wait(120) and stream.got, stream.error
    assert metric(home, "talkserve_chunks_streamed_total") > streamed  # it streams from its home replica
    with TalkClient(router.url) as other_connection:
        other_connection.cancel("barge-router")
    acked = time.monotonic()
    stream.join(10)
    assert stream.error is None and stream.ended_at is not None and stream.ended_at - acked < 3.0
    assert max(c.index for _, c in stream.got) < 2  # stopped: the reply has three sentences


def test_a_draining_replica_finishes_its_streams_while_new_requests_go_to_the_other(replicas, router):
    conversation = "drain-router"
    home = owner(replicas, router, conversation)
    other = next(s for s in replicas if s is not home)
    stream = Collector(router.url, LONG_QUESTION, conversation)
    stream.start()
    assert stream.first.wait(120) and stream.got, stream.error
    drain.start(home.proc.pid)  # preStop: new replies refused, readiness fails
    try:
        with TalkClient(router.url, retry=NO_RETRY) as client, pytest.raises(TalkError) as refused:
            list(client.stream("Thanks.", "sample", max_new_tokens=6, conversation_id=conversation))
        assert refused.value.status == "UNAVAILABLE"  # until the router learns the pod is not ready
        router.reload([other.ports.grpc])  # the headless Service drops the NotReady pod
        served = metric(other, "talkserve_chunks_streamed_total")
        with TalkClient(router.url) as client:
            assert list(client.stream("Thanks.", "sample", max_new_tokens=6, conversation_id=conversation))
        assert metric(other, "talkserve_chunks_streamed_total") > served
        stream.join(120)
        assert stream.error is None and stream.ended_at is not None  # the stream in flight finished
        assert max(c.index for _, c in stream.got) == 2  # all three sentences
    finally:
        drain.clear(home.proc.pid)


class ConnectionBalancer(threading.Thread):
    """What kube-proxy does for a ClusterIP Service: each new TCP connection to the next backend."""

    def __init__(self, backends: list[int]):
        super().__init__(daemon=True)
        self.backends, self.next = backends, 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"127.0.0.1:{self.sock.getsockname()[1]}"

    def run(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            backend = socket.create_connection(("127.0.0.1", self.backends[self.next % len(self.backends)]))
            self.next += 1
            for a, b in ((client, backend), (backend, client)):
                threading.Thread(target=self.pump, args=(a, b), daemon=True).start()

    @staticmethod
    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def test_without_the_router_a_client_reconnects_off_a_draining_replica(replicas):
    first, second = replicas
    balancer = ConnectionBalancer([first.ports.grpc, second.ports.grpc])
    balancer.start()
    try:
        with TalkClient(balancer.url) as client:
            served = metric(first, "talkserve_chunks_streamed_total")
            assert list(client.stream("Thanks.", "sample", max_new_tokens=6))
            assert metric(first, "talkserve_chunks_streamed_total") > served  # its channel is on `first`
            drain.start(first.proc.pid)
            try:
                served = metric(second, "talkserve_chunks_streamed_total")
                assert list(client.stream("Thanks.", "sample", max_new_tokens=6))  # refused, reconnected, served
                assert metric(second, "talkserve_chunks_streamed_total") > served
                # every retry on a new channel (one per refusal: a new TCP connection may land on the
                # draining replica again, as with kube-proxy, if gRPC redialled the old one meanwhile)
                assert client.connections >= 2 and client.attempts == client.connections + 1
            finally:
                drain.clear(first.proc.pid)
    finally:
        balancer.sock.close()


def test_the_router_configuration_is_the_one_the_manifests_ship():
    template, env, args = rendered_router()
    assert "hash $talkserve_route consistent;" in template and "$http_conversation_id" in template
    assert re.search(r"worker_shutdown_timeout (\d+)s", " ".join(args))
    grace = int(re.search(r"worker_shutdown_timeout (\d+)s", " ".join(args))[1])
    deployment = workload(render("cpu"))
    hook = deployment["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert grace > int(hook[hook.index("--timeout") + 1])  # the router outlasts a replica's drain
    assert env["TALKSERVE_PODS"] == "talkserve-pods-cpu"  # the overlay's headless Service
    assert os.access(NGINX, os.X_OK)
