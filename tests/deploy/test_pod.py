"""The pools' pods as Kubernetes runs them (tests/deploy/kubelet.py): the rendered Jobs and Deployment with
their real commands, uids, read-only root filesystems and exactly their mounts, in order on a
fresh cluster: avatars registered by their Job, the repository built by its Job (no GPU), serving
pods that wait for it, come up, answer a reply with the avatar store read-only, drain and stop.
GPU pools: the same up to the engine build, which needs a GPU this machine lacks."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from kubelet import plan_pod, run_pod
from test_k8s import by_kind, render, workload

pytestmark = [pytest.mark.server, pytest.mark.slow]

SECRETS = {"talkserve-admin/key": "s3cret"}
NAMESPACE = "talkserve"


def pod_spec(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]


def claims_for(docs: list[dict], root: Path) -> dict[str, str]:
    return {c["metadata"]["name"]: str(root / c["metadata"]["name"]) for c in by_kind(docs, "PersistentVolumeClaim")}


def plan(docs: list[dict], doc: dict, claims: dict[str, str], work: Path) -> dict:
    configmaps = {c["metadata"]["name"]: c for c in by_kind(docs, "ConfigMap")}
    return plan_pod(pod_spec(doc), claims, configmaps, SECRETS, NAMESPACE, work)


def result(results: list[dict], do: str, container: str | None = None, nth: int = 0) -> dict:
    return [r for r in results if r["step"]["do"] == do and r["step"].get("container") == container][nth]


@pytest.fixture(scope="module")
def cpu_jobs(tmp_path_factory):
    """(rendered cpu overlay, its PVC folders) after its avatars and build Jobs ran."""
    docs = render("cpu")
    root = tmp_path_factory.mktemp("cluster")
    claims = claims_for(docs, root / "pvc")
    avatars = plan(docs, workload(docs, "Job", "avatars"), claims, root / "avatars-job")
    done = run_pod(avatars, [{"do": "run", "container": "avatars", "timeout": 300}, {"do": "written"}], 400)
    assert done[0]["rc"] == 0, done[0]["log"]
    assert "1 avatars" in done[0]["log"] and done[1]["files"] == []
    build_doc = workload(docs, "Job", "build")
    build = plan(docs, build_doc, claims, root / "build-job")
    assert build["containers"]["build"]["argv"][:2] == ["talkserve", "build"]
    done = run_pod(build, [{"do": "run", "container": "build", "timeout": 1200}, {"do": "written"}], 1300)
    assert done[0]["rc"] == 0, done[0]["log"]
    assert done[1]["files"] == []  # the root filesystem stayed as the image has it
    return docs, claims, root


def test_the_cpu_pool_comes_up_serves_a_reply_from_a_read_only_avatar_store_and_drains(cpu_jobs, tmp_path):
    docs, claims, _ = cpu_jobs
    models = Path(claims["talkserve-models-cpu"])
    config = json.loads((models / "current" / "talkserve_build.json").read_text())
    assert config["recipe"]["serving"]["avatar_db"] is None  # found by the pod from $TALKSERVE_HOME
    # the Job measured the stream limit by serving its build in the pod (read-only root, its /dev/shm)
    assert config["capacity"]["from"] == "served run" and config["capacity"]["steps"][0]["errors"] == []
    deployment = workload(docs)
    spec = pod_spec(deployment)
    c = spec["containers"][0]
    ready, live, stop = c["readinessProbe"], c["livenessProbe"], c["lifecycle"]["preStop"]["exec"]
    startup = c["startupProbe"]
    client = ("import urllib.request, urllib.error\n"
              "stats = 'http://127.0.0.1:8000/v2/models/stats'\n"
              "try:\n    urllib.request.urlopen(stats, timeout=10); print('OPEN')\n"
              "except urllib.error.HTTPError as e:\n    assert e.code in (401, 403), e.code\n"
              "keyed = urllib.request.Request(stats, headers={'talkserve-admin-key': 's3cret'})\n"
              "assert b'model_stats' in urllib.request.urlopen(keyed, timeout=10).read()\n"
              "from talkserve.client import TalkClient\n"
              "with TalkClient('127.0.0.1:8001') as t:\n"
              "    chunks = list(t.stream('Hello!', 'sample', max_new_tokens=8, conversation_id='pod-test'))\n"
              "print(len(chunks), sum(len(x.video) for x in chunks), 'x'.join(map(str, chunks[0].video.shape[1:])))\n")
    steps = [
        {"do": "run", "container": "wait-repository", "timeout": 60},
        {"do": "start", "container": "tritonserver"},
        {"do": "http", "container": "tritonserver", "port": startup["httpGet"]["port"],
         "path": startup["httpGet"]["path"],
         "timeout": min(300, startup["periodSeconds"] * startup["failureThreshold"])},
        {"do": "exec", "container": "tritonserver", "command": ready["exec"]["command"],
         "timeout": ready["timeoutSeconds"]},
        {"do": "exec", "container": "tritonserver", "command": live["exec"]["command"],
         "timeout": live["timeoutSeconds"]},
        {"do": "host", "command": [sys.executable, "-c", client], "timeout": 300},
        {"do": "exec", "container": "tritonserver", "command": stop["command"],
         "timeout": spec["terminationGracePeriodSeconds"]},
        {"do": "exec", "container": "tritonserver", "command": ready["exec"]["command"],
         "timeout": ready["timeoutSeconds"]},
        {"do": "exec", "container": "tritonserver", "command": live["exec"]["command"],
         "timeout": live["timeoutSeconds"]},
        {"do": "stop", "container": "tritonserver", "grace": spec["terminationGracePeriodSeconds"]},
        {"do": "written"},
    ]
    results = run_pod(plan(docs, deployment, claims, tmp_path / "pod"), steps, 900)
    assert result(results, "run", "wait-repository")["rc"] == 0
    started = result(results, "http", "tritonserver")
    assert started["ok"], started.get("why") and result(results, "stop", "tritonserver")["log"]
    readiness, liveness = result(results, "exec", "tritonserver", 0), result(results, "exec", "tritonserver", 1)
    assert readiness["rc"] == 0 and readiness["out"].strip() == "ready", readiness
    assert liveness["rc"] == 0 and liveness["out"].strip() == "live", liveness
    for probe, spec_ in ((readiness, ready), (liveness, live)):  # start-up included: within the kubelet's limit
        assert probe["seconds"] < spec_["timeoutSeconds"], probe
    print(f"startup {started['seconds']:.1f}s, readiness {readiness['seconds']:.2f}s, "
          f"liveness {liveness['seconds']:.2f}s")
    reply = result(results, "host")
    assert reply["rc"] == 0, reply["out"]  # statistics only with the Secret's key
    n, frames, shape = reply["out"].split()
    assert int(n) >= 1 and int(frames) >= 1 and shape == "512x512x3"  # the face, from the read-only store
    assert result(results, "exec", "tritonserver", 2)["rc"] == 0  # preStop: drained
    draining = result(results, "exec", "tritonserver", 3)
    assert draining["rc"] == 1 and "draining" in draining["out"]  # out of the Service
    assert result(results, "exec", "tritonserver", 4)["rc"] == 0  # and not restarted for it
    stopped = result(results, "stop", "tritonserver")
    assert stopped["rc"] == 0, stopped["log"]
    assert result(results, "written")["files"] == []
    avatars = Path(claims["talkserve-avatars-cpu"])
    assert sorted(p.name for p in avatars.iterdir()) == ["avatars.db"]  # read with no journal, -wal or -shm


@pytest.mark.parametrize("overlay", ["rtx3060", "rtx4090"])
def test_a_gpu_pool_waits_for_its_repository_then_reaches_the_engine_build(overlay, cpu_jobs, tmp_path):
    cpu_docs, cpu_claims, _ = cpu_jobs
    docs = render(overlay)

    def named(d: dict, suffix: str) -> dict:  # the pod spec with the overlay's suffix taken out of names
        return json.loads(json.dumps(pod_spec(d)).replace(f"-{suffix}", "-POOL"))

    for component in ("build", "avatars"):  # the cpu pool's run covers these Jobs: the same pods
        assert named(workload(docs, "Job", component), overlay) == named(workload(cpu_docs, "Job", component), "cpu")
    claims = claims_for(docs, tmp_path / "pvc")
    deployment = workload(docs)
    init = ["wait-repository", "engines"]
    assert [i["name"] for i in pod_spec(deployment)["initContainers"]] == init
    # 1. scheduled before the build Job published: the pod waits (no crash loop, nothing held but its GPU)
    early = run_pod(plan(docs, deployment, claims, tmp_path / "early"),
                    [{"do": "run", "container": "wait-repository", "timeout": 8}], 120)
    assert early[0]["rc"] == "timeout" and "waiting for a published repository" in early[0]["log"]
    # 2. the build Job published (what the cpu pool's ran wrote): on to the engines, built by this
    # pod's own GPU, which this machine does not have
    shutil.copytree(cpu_claims["talkserve-models-cpu"], claims[f"talkserve-models-{overlay}"], symlinks=True,
                    dirs_exist_ok=True)
    steps = [{"do": "run", "container": name, "timeout": 300} for name in init] + [{"do": "written"}]
    results = run_pod(plan(docs, deployment, claims, tmp_path / "pod"), steps, 700)
    assert results[0]["rc"] == 0 and "is published" in results[0]["log"]
    engines = results[1]
    assert engines["rc"] == 1, engines["log"]
    assert "GPU" in engines["log"] or "TensorRT" in engines["log"], engines["log"]
    assert "Read-only file system" not in engines["log"] and "Permission denied" not in engines["log"]
    assert results[2]["files"] == []
