#!/usr/bin/env bash
# Offline validation tools for k8s/, monitoring and the router, installed into .tools/ (git-ignored):
# Prometheus + promtool from Debian's `prometheus` package, unpacked rather than installed so no
# service starts on the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
# unpack PACKAGE into .tools/PACKAGE unless BINARY (a path inside it) is already there
unpack() {
  local package=$1 binary=$2 dest=.tools/$1
  if [ ! -x "$dest/$binary" ]; then
    local tmp
    tmp=$(mktemp -d)
    (cd "$tmp" && { apt-get download "$package" >/dev/null 2>&1 || { apt-get update -qq && apt-get download "$package"; }; })
    mkdir -p "$dest"
    dpkg -x "$tmp"/"$package"_*.deb "$dest"
    rm -rf "$tmp"
  fi
}
unpack prometheus usr/bin/promtool
.tools/prometheus/usr/bin/promtool --version | head -1
# nginx, unpacked the same way: the router's configuration (k8s/base/router) runs on it in
# tests/deploy/test_router.py.
unpack nginx usr/sbin/nginx
.tools/nginx/usr/sbin/nginx -v

# The Prometheus Operator's CRD schemas (ServiceMonitor, PrometheusRule), compiled to validators.
node_dest=.tools/node
if [ ! -d "$node_dest/node_modules/@kubernetes-models/prometheus-operator" ]; then
  npm install --prefix "$node_dest" --no-audit --no-fund --loglevel=error @kubernetes-models/prometheus-operator@6.0.0
fi

# checkov in a venv of its own: it pins versions that would downgrade the project's packages.
if [ ! -x .tools/checkov/bin/checkov ]; then
  python3 -m venv .tools/checkov
  .tools/checkov/bin/pip install --quiet --disable-pip-version-check "checkov==3.3.30"
fi
.tools/checkov/bin/checkov --version
