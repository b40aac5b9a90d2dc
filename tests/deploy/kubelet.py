"""Run a rendered pod the way the kubelet would, on this machine, without Kubernetes.

Each container runs its real command and args, as its uid and gid (plus fsGroup), with no new
privileges, on a root filesystem that is read-only (readOnlyRootFilesystem), with exactly its
volumeMounts: PVCs are host folders shared between pods (as a ReadWriteMany volume is), emptyDirs
fresh writable folders, ConfigMaps laid out as the kubelet lays them (`..data` symlinks); the
readOnly ones read-only. Environment: the image's ENV (its Dockerfile), then the container's env
with secretKeyRef, fieldRef and $(VAR) expansion. Probes run as the kubelet runs them: httpGet
from outside, exec inside the container, each within its timeoutSeconds.

The image is this machine's own filesystem (python, the venv, talkserve) under an overlay that is
remounted read-only before anything runs, plus what the NGC serving image has that this machine
does not: `tritonserver` on PATH with its backends folder, played by the embedded 2.51 of
nvidia-pytriton (which lacks flags newer than 2.51: NEWER_FLAGS, the only args it drops).

A pod is one `unshare --mount --pid --net --fork` child running this file as a driver over a plan
(JSON steps); when it ends, its namespaces and every process in them go with it.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

# tritonserver flags the NGC 25.10 image knows and the embedded 2.51 does not
NEWER_FLAGS = ("--grpc-max-response-pool-size",)
PROJECT = Path(__file__).resolve().parents[2]
IMAGES = {"ghcr.io/talkserve/talkserve": "Dockerfile", "ghcr.io/talkserve/talkserve-build": "Dockerfile.build"}
VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")  # the kubelet's $(VAR) in env values, command, args
IMAGE_HOME = "/home/talkserve"  # the image's user has no home folder (useradd --no-create-home)


def image_env(image: str) -> dict[str, str]:
    """The image's ENV lines (from its Dockerfile), plus the PATH under which this machine's venv plays it."""
    dockerfile = PROJECT / "k8s" / "images" / IMAGES[image.rsplit(":", 1)[0]]
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    env = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for pair in shlex.split(line[4:]):
                key, _, value = pair.partition("=")
                env[key] = value
    venv = Path(sys.prefix) / "bin"
    env["PATH"] = f"{venv}:/usr/local/bin:/usr/bin:/bin"
    env["HOME"] = IMAGE_HOME
    return env


def container_env(container: dict, secrets: dict[str, str], namespace: str) -> dict[str, str]:
    env = image_env(container["image"])
    for item in container.get("env", []):
        if "value" in item:
            value = expand([item["value"]], env)[0]
        elif "secretKeyRef" in item["valueFrom"]:
            ref = item["valueFrom"]["secretKeyRef"]
            value = secrets[f"{ref['name']}/{ref['key']}"]
        else:
            path = item["valueFrom"]["fieldRef"]["fieldPath"]
            value = {"metadata.namespace": namespace, "metadata.name": "pod-0"}[path]
        env[item["name"]] = value
    return env


def expand(args: list[str], env: dict[str, str]) -> list[str]:
    """$(VAR) in command and args, as the kubelet expands them."""
    return [VAR_REF.sub(lambda m: env.get(m[1], m[0]), a) for a in args]


def plan_pod(pod: dict, claims: dict[str, str], configmaps: dict[str, dict], secrets: dict[str, str],
             namespace: str, work: Path) -> dict:
    """Everything the driver needs: per container its argv, env, uid/gid/groups and mounts."""
    sc = pod.get("securityContext", {})
    volumes = {}
    for v in pod.get("volumes", []):
        if "persistentVolumeClaim" in v:
            claim = v["persistentVolumeClaim"]
            volumes[v["name"]] = {"kind": "pvc", "source": claims[claim["claimName"]],
                                  "readOnly": bool(claim.get("readOnly"))}
        elif "emptyDir" in v:
            volumes[v["name"]] = {"kind": "emptyDir", "medium": v["emptyDir"].get("medium", "")}
        elif "configMap" in v:
            cm = configmaps[v["configMap"]["name"]]
            volumes[v["name"]] = {"kind": "configMap", "data": cm.get("data", {}),
                                  "binaryData": cm.get("binaryData", {})}
        else:
            raise ValueError(f"volume {v['name']}: kind not emulated")
    containers = {}
    for c in [*pod.get("initContainers", []), *pod["containers"]]:
        csc = {**sc, **c.get("securityContext", {})}
        env = container_env(c, secrets, namespace)
        argv = expand([*c.get("command", []), *c.get("args", [])], env)
        if not csc.get("readOnlyRootFilesystem") or csc.get("allowPrivilegeEscalation", True):
            raise ValueError(f"{c['name']}: only read-only, no-escalation containers are emulated")
        containers[c["name"]] = {
            "argv": argv, "env": env, "uid": csc["runAsUser"], "gid": csc["runAsGroup"],
            "groups": [sc["fsGroup"]] if "fsGroup" in sc else [],
            "mounts": [{"name": m["name"], "path": m["mountPath"], "readOnly": bool(m.get("readOnly"))}
                       for m in c.get("volumeMounts", [])],
            "ports": {p["name"]: p["containerPort"] for p in c.get("ports", [])},
        }
    return {"work": str(work), "volumes": volumes, "containers": containers, "fsGroup": sc.get("fsGroup"),
            "tritonserver": tritonserver_image_part()}


def tritonserver_image_part() -> dict:
    """What the NGC image adds: tritonserver on PATH, its backends, the environment its stub needs."""
    from talkserve.server.serve import pytriton_root, server_env

    env = server_env()
    keep = {k: env[k] for k in ("LD_LIBRARY_PATH", "PYTHONHOME", "PYTHONPATH", "PYTHONUTF8") if k in env}
    return {"binary": str(pytriton_root() / "tritonserver" / "bin" / "tritonserver"), "env": keep}


def run_pod(plan: dict, steps: list[dict], timeout: float) -> list[dict]:
    """Run `steps` in a fresh pod (private mount, pid and network namespaces); their results."""
    work = Path(plan["work"])
    work.mkdir(parents=True, exist_ok=True)
    (work / "plan.json").write_text(json.dumps({"plan": plan, "steps": steps}))
    run = subprocess.run(["unshare", "--mount", "--pid", "--net", "--fork", "--propagation", "private",
                          sys.executable, __file__, str(work / "plan.json")],
                         capture_output=True, text=True, timeout=timeout)
    out = work / "results.json"
    if not out.is_file():
        raise AssertionError(f"the pod driver failed (exit {run.returncode}):\n{run.stdout[-4000:]}\n"
                             f"{run.stderr[-4000:]}")
    return json.loads(out.read_text())


# --- the driver: runs inside the namespaces, as root ----------------------------------------------


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True)


class Pod:
    def __init__(self, plan: dict):
        self.plan, self.work = plan, Path(plan["work"])
        self.root = self.work / "rootfs"
        self.procs: dict[str, subprocess.Popen] = {}

    def setup(self) -> None:
        sh("ip", "link", "set", "lo", "up")
        layer = self.work / "layer"
        layer.mkdir(exist_ok=True)
        sh("mount", "-t", "tmpfs", "-o", "mode=755", "tmpfs", str(layer))
        for d in ("upper", "work"):
            (layer / d).mkdir()
        self.root.mkdir(exist_ok=True)
        sh("mount", "-t", "overlay", "overlay", "-o",
           f"lowerdir=/,upperdir={layer}/upper,workdir={layer}/work", str(self.root))
        self._image()
        volumes = self._volumes()
        for c in self.plan["containers"].values():  # mount points exist in the image, as runtimes make them
            for m in c["mounts"]:
                (self.root / m["path"].lstrip("/")).mkdir(parents=True, exist_ok=True)
        sh("mount", "-t", "proc", "proc", str(self.root / "proc"))
        sh("mount", "--rbind", "/dev", str(self.root / "dev"))
        sh("mount", "-t", "tmpfs", "-o", "size=64m", "shm", str(self.root / "dev" / "shm"))  # the pod's default
        sh("mount", "-t", "tmpfs", "-o", "ro", "empty", str(self.root / "tmp"))  # an image's /tmp is empty
        self.volumes = volumes
        sh("mount", "-o", "remount,ro", str(self.root))  # readOnlyRootFilesystem

    def _image(self) -> None:
        r = self.root
        os.chmod(r / "root", 0o711)  # python lives under /root/.pyenv here; the image has it in /usr
        triton = self.plan["tritonserver"]
        from talkserve.server.serve import backend_dir

        backends = "/" + str(backend_dir(r / "opt" / "tritonserver").relative_to(r))  # as the container sees it
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in triton["env"].items())
        skip = " | ".join(f"{f}=*" for f in NEWER_FLAGS)
        wrapper = r / "usr" / "local" / "bin" / "tritonserver"
        wrapper.parent.mkdir(parents=True, exist_ok=True)
        wrapper.write_text(f"""#!/bin/sh
# the NGC image's tritonserver, played by the embedded 2.51 (tests/deploy/kubelet.py)
for a do shift; case "$a" in {skip}) ;; *) set -- "$@" "$a";; esac; done
exec env {env} {triton['binary']} --backend-directory={backends} "$@"
""")
        wrapper.chmod(0o755)

    def _volumes(self) -> dict[str, Path]:
        paths, group = {}, self.plan["fsGroup"]
        for name, v in self.plan["volumes"].items():
            if v["kind"] == "pvc":
                path = Path(v["source"])
                path.mkdir(parents=True, exist_ok=True)
                os.chown(path, 0, group or 0)
                path.chmod(0o2775)  # the kubelet's fsGroup ownership
            elif v["kind"] == "emptyDir":
                path = self.work / "emptydir" / name
                path.mkdir(parents=True)
                if v["medium"] == "Memory":
                    sh("mount", "-t", "tmpfs", "tmpfs", str(path))
                os.chown(path, 0, group or 0)
                path.chmod(0o777)
            else:  # configMap: <key> -> ..data/<key>, ..data -> ..<timestamp>/
                path = self.work / "configmap" / name
                stamp = path / "..2026_01_01_00_00_00.000000000"
                stamp.mkdir(parents=True)
                for key, text in v["data"].items():
                    (stamp / key).write_text(text)
                for key, b64 in v["binaryData"].items():
                    (stamp / key).write_bytes(base64.b64decode(b64))
                (path / "..data").symlink_to(stamp.name)
                for key in [*v["data"], *v["binaryData"]]:
                    (path / key).symlink_to(f"..data/{key}")
            paths[name] = path
        return paths

    def mount_for(self, name: str) -> None:
        """Bind exactly this container's volumes (a pod's containers each see their own set)."""
        c = self.plan["containers"][name]
        for m in c["mounts"]:
            v = self.plan["volumes"][m["name"]]
            target = self.root / m["path"].lstrip("/")
            sh("mount", "--bind", str(self.volumes[m["name"]]), str(target))
            if m["readOnly"] or v.get("readOnly") or v["kind"] == "configMap":
                sh("mount", "-o", "remount,bind,ro", str(target))

    def unmount_for(self, name: str) -> None:
        for m in reversed(self.plan["containers"][name]["mounts"]):
            subprocess.run(["umount", "-l", str(self.root / m["path"].lstrip("/"))], check=False)

    def argv(self, name: str, command: list[str]) -> list[str]:
        c = self.plan["containers"][name]
        groups = ",".join(str(g) for g in c["groups"]) or None
        return ["chroot", str(self.root), "/usr/bin/setpriv", f"--reuid={c['uid']}", f"--regid={c['gid']}",
                *([f"--groups={groups}"] if groups else ["--clear-groups"]), "--no-new-privs",
                "--inh-caps=-all", "--bounding-set=-all", "/usr/bin/env", "-i",
                *(f"{k}={v}" for k, v in c["env"].items()), *command]

    def start(self, name: str, log: Path) -> subprocess.Popen:
        self.mount_for(name)
        out = log.open("wb")
        proc = subprocess.Popen(self.argv(name, self.plan["containers"][name]["argv"]), stdout=out,
                                stderr=subprocess.STDOUT, cwd="/")
        self.procs[name] = proc
        return proc


def execute(pod: Pod, step: dict) -> dict:
    kind, name = step["do"], step.get("container")
    start = time.monotonic()
    if kind == "run":  # an (init) container to completion
        log = pod.work / f"{name}.log"
        proc = pod.start(name, log)
        try:
            code = proc.wait(step.get("timeout", 600))
        except subprocess.TimeoutExpired:
            proc.kill()
            code = "timeout"
        pod.unmount_for(name)
        return {"rc": code, "log": log.read_text(errors="replace")[-6000:]}
    if kind == "start":
        pod.start(name, pod.work / f"{name}.log")
        return {"pid": pod.procs[name].pid}
    if kind == "http":  # httpGet probe until it answers 200 (startupProbe)
        url = f"http://127.0.0.1:{pod.plan['containers'][name]['ports'].get(step['port'], step['port'])}{step['path']}"
        while time.monotonic() - start < step["timeout"]:
            if pod.procs[name].poll() is not None:
                return {"ok": False, "why": f"exited {pod.procs[name].returncode}"}
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return {"ok": True, "seconds": time.monotonic() - start}
            except OSError:
                pass
            time.sleep(0.5)
        return {"ok": False, "why": "timeout"}
    if kind == "exec":  # an exec probe or hook, inside the container, within its timeout
        try:
            run = subprocess.run(pod.argv(name, step["command"]), capture_output=True, text=True,
                                 timeout=step["timeout"])
            return {"rc": run.returncode, "out": run.stdout + run.stderr, "seconds": time.monotonic() - start}
        except subprocess.TimeoutExpired:
            return {"rc": "timeout", "out": "", "seconds": time.monotonic() - start}
    if kind == "host":  # a client outside the pod (same network namespace), as this machine runs it
        run = subprocess.run(step["command"], capture_output=True, text=True, timeout=step.get("timeout", 600))
        return {"rc": run.returncode, "out": run.stdout[-6000:] + run.stderr[-6000:]}
    if kind == "stop":  # SIGTERM (after the preStop hook ran as its own exec step), then wait
        proc = pod.procs[name]
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(step["grace"])
        except subprocess.TimeoutExpired:
            proc.kill()
            code = "killed"
        pod.unmount_for(name)
        return {"rc": code, "log": (pod.work / f"{name}.log").read_text(errors="replace")[-6000:]}
    if kind == "written":  # what reached the image's own layer (nothing may, once it is read-only)
        upper = pod.work / "layer" / "upper"
        return {"files": sorted(str(p.relative_to(upper)) for p in upper.rglob("*") if p.is_file()
                                and not str(p.relative_to(upper)).startswith(("opt/tritonserver", "usr/local/bin")))}
    raise ValueError(kind)


def main(path: str) -> None:
    spec = json.loads(Path(path).read_text())
    pod = Pod(spec["plan"])
    pod.setup()
    results = []
    for step in spec["steps"]:
        results.append({"step": step, **execute(pod, step)})
    (pod.work / "results.json").write_text(json.dumps(results))
    for proc in pod.procs.values():
        if proc.poll() is None:
            proc.kill()


if __name__ == "__main__":
    sys.path.insert(0, str(PROJECT))
    main(sys.argv[1])
