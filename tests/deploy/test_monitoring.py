"""Monitoring: the PrometheusRule passes promtool's checks and unit tests, and a real Prometheus
scraping the embedded tritonserver reads Triton's and our series and evaluates the recording rules.

Prometheus and promtool come from Debian's `prometheus` package, unpacked by k8s/tools.sh.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml

from talkserve.client import TalkClient, TalkError

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".tools" / "prometheus" / "usr" / "bin"
RULE = ROOT / "k8s" / "monitoring" / "prometheusrule.yaml"
# what the rendered ServiceMonitor gives every series of the cpu pool (tests/test_k8s.py checks it)
POD_LABELS = {"namespace": "talkserve", "pool": "cpu", "pod": "talkserve-cpu-0"}


def tool(name: str) -> str:
    path = TOOLS / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `bash k8s/tools.sh` (the README's test command does)")
    return str(path)


def rule_groups(interval: str | None = None) -> dict:
    spec = yaml.safe_load(RULE.read_text())["spec"]
    if interval:
        for group in spec["groups"]:
            group["interval"] = interval
    return spec


def test_rules_pass_promtool_check_and_unit_tests(tmp_path):
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_groups()))
    shutil.copy(ROOT / "k8s" / "tests" / "rules_test.yaml", tmp_path)
    check = subprocess.run([tool("promtool"), "check", "rules", "rules.yaml"], cwd=tmp_path, capture_output=True,
                           text=True)
    assert check.returncode == 0 and "SUCCESS" in check.stdout, check.stdout + check.stderr
    unit = subprocess.run([tool("promtool"), "test", "rules", "rules_test.yaml"], cwd=tmp_path, capture_output=True,
                          text=True)
    assert unit.returncode == 0, unit.stdout + unit.stderr


def test_every_alert_has_a_unit_test():
    alerts = {r["alert"] for g in rule_groups()["groups"] for r in g["rules"] if "alert" in r}
    cases = yaml.safe_load((ROOT / "k8s" / "tests" / "rules_test.yaml").read_text())["tests"]
    tested = {t["alertname"] for case in cases for t in case.get("alert_rule_test", [])}
    assert alerts == tested


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def prometheus(server, tmp_path_factory):
    """A real Prometheus scraping the test server every second, with our rules evaluated every second."""
    work = tmp_path_factory.mktemp("prometheus")
    (work / "rules.yaml").write_text(yaml.safe_dump(rule_groups(interval="1s")))
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "rule_files": [str(work / "rules.yaml")],
              "scrape_configs": [{"job_name": "talkserve",
                                  "static_configs": [{"targets": [f"127.0.0.1:{server.ports.metrics}"],
                                                      "labels": POD_LABELS}]}]}
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (work / "prometheus.log").open("wb")
    proc = subprocess.Popen([tool("prometheus"), f"--config.file={work / 'prometheus.yml'}",
                             f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/-/ready", timeout=2)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, (work / "prometheus.log").read_text()
                time.sleep(0.5)
        # Counters must be seen before the tests move them: rate() needs the increase between samples.
        wait_for(url, 'up{job="talkserve"} == 1')
        time.sleep(2)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def query(url: str, promql: str) -> list[dict]:
    with urllib.request.urlopen(f"{url}/api/v1/query?query={urllib.parse.quote(promql)}", timeout=10) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def wait_for(url: str, promql: str, timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = query(url, promql)
        if result:
            return result
        time.sleep(1)
    raise AssertionError(f"Prometheus has no value for {promql} after {timeout:.0f}s")


def test_prometheus_scrapes_triton_and_talkserve_series_and_records_rules(prometheus, server, url):
    with TalkClient(url) as client:
        for _ in range(2):
            assert list(client.stream("Thanks.", "sample", max_new_tokens=6))
        with pytest.raises(TalkError):
            list(client.stream("Hi.", "ghost"))
        with pytest.raises(TalkError):  # refused by asr: talkserve_request_errors_total counts it
            list(client.stream_voice(np.zeros(0, np.float32), 16000, "sample"))
    triton = wait_for(prometheus, 'nv_inference_request_success{model="lipsync"} > 0')
    assert triton[0]["metric"]["pod"] == POD_LABELS["pod"]
    wait_for(prometheus, "talkserve_chunks_streamed_total > 0")
    wait_for(prometheus, 'talkserve_requests_rejected_total{field="avatar_id"} > 0')
    loaded = wait_for(prometheus, "talkserve:models_loaded:count")
    expected = wait_for(prometheus, "talkserve:models_expected:max")
    models = sum(1 for d in server.repository.iterdir() if (d / "config.pbtxt").is_file())
    assert float(loaded[0]["value"][1]) == float(expected[0]["value"][1]) == models
    assert query(prometheus, 'ALERTS{alertname="TalkserveModelNotReady"}') == []
    active = wait_for(prometheus, "talkserve:stream_utilization:max1m")  # there when idle: the HPA can scale down
    assert active[0]["metric"]["pool"] == "cpu" and 0 <= float(active[0]["value"][1]) <= 1
    failures = wait_for(prometheus, 'triton:request_failure:ratio_rate5m{model="asr"} > 0')
    assert 0 < float(failures[0]["value"][1]) <= 1  # the refused utterance
    assert float(query(prometheus, 'triton:request_failure:ratio_rate5m{model="tts"}')[0]["value"][1]) == 0
    ttfc = wait_for(prometheus, "talkserve:time_to_first_chunk_seconds:p95_5m")
    assert 0 < float(ttfc[0]["value"][1]) < 60
    queue = wait_for(prometheus, 'triton:nv_inference_queue_compute:ratio_rate1m{model="wav2lip"}')
    assert float(queue[0]["value"][1]) >= 0
    assert query(prometheus, 'ALERTS{alertname="TalkserveTargetDown"}') == []


# Triton exports these only where it sees a GPU; the embedded CPU server has none.
GPU_METRICS = {"nv_gpu_memory_used_bytes", "nv_gpu_memory_total_bytes", "nv_gpu_utilization", "nv_gpu_power_usage"}
METRIC = re.compile(r"\b(?:nv_|talkserve_|talkserve:|triton:)[A-Za-z0-9_:]*")


def test_every_dashboard_expression_parses_and_names_real_metrics(prometheus, url):
    with TalkClient(url) as client:
        assert list(client.stream("Thanks.", "sample", max_new_tokens=6))
    wait_for(prometheus, "talkserve:models_loaded:count")
    with urllib.request.urlopen(f"{prometheus}/api/v1/label/__name__/values", timeout=10) as r:
        scraped = set(json.loads(r.read())["data"])
    recorded = {r["record"] for g in rule_groups()["groups"] for r in g["rules"] if "record" in r}
    dashboard = json.loads((ROOT / "k8s" / "monitoring" / "dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    for expr in exprs:
        query(prometheus, expr)  # Prometheus parses and evaluates it
        names = set(METRIC.findall(expr))
        assert names and names <= scraped | recorded | GPU_METRICS, (expr, names - scraped - recorded)


def test_client_library_exports_its_own_metrics(url):
    from prometheus_client import REGISTRY

    def value(name: str, **labels) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    ok, chunks = value("talkserve_client_requests_total", model="talking_head", status="OK"), \
        value("talkserve_client_chunks_total", model="talking_head")
    bad = value("talkserve_client_requests_total", model="talking_head", status="INVALID_ARGUMENT")
    with TalkClient(url) as client:
        got = list(client.stream("Thanks.", "sample", max_new_tokens=6))
        with pytest.raises(TalkError):
            list(client.stream("Hi.", "ghost"))
    assert value("talkserve_client_requests_total", model="talking_head", status="OK") == ok + 1
    assert value("talkserve_client_requests_total", model="talking_head", status="INVALID_ARGUMENT") == bad + 1
    assert value("talkserve_client_chunks_total", model="talking_head") == chunks + len(got)
    assert value("talkserve_client_time_to_first_chunk_seconds_count", model="talking_head") >= 1
