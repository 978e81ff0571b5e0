"""The Helm chart (deploy/helm/celery-jobmon): a real ``helm`` lints and renders it with every
values file of its ``ci/`` folder; the objects validate against Kubernetes' schemas
(kubernetes-validate, strict: unknown fields are errors) and prometheus-operator's
(@kubernetes-models/prometheus-operator, through node); the rules and dashboards it ships are
byte-identical to prometheus/rules and grafana/dashboards; every ``serve`` option reaches the
container and the environment it renders is what ``serve`` accepts.

Tools: ``deploy/helm/tools/install.sh`` (``.ci/run`` runs it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from typing import Any

import click
import pytest
import yaml

from exporter.cli.commands import serve
from exporter.cli.options import settings_from
from tests.deploy.chart import (
    CHART,
    HELM_DIR,
    INSTALL_HINT,
    KUBERNETES_VERSIONS,
    MODELS,
    ROOT,
    SYNC_HINT,
    TOOLS,
    VALUES_FILES,
    container,
    one,
    rendered,
    run_helm,
)
from tests.support.binaries import unavailable


def kinds(objects: list[dict[str, Any]]) -> list[str]:
    return sorted(f"{o['kind']}/{o['metadata']['name']}" for o in objects)


def is_custom(obj: dict[str, Any]) -> bool:
    return str(obj["apiVersion"]).startswith("monitoring.coreos.com/")


def validate_kubernetes(obj: dict[str, Any]) -> list[str]:
    try:
        import kubernetes_validate
    except ImportError:
        unavailable("kubernetes-validate not installed: pip install -e '.[test]'")
    problems = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            problems.append(f"{obj['kind']}/{obj['metadata']['name']} (Kubernetes {version}): "
                            f"{path}: {exc.message}")
    return problems


def validate_custom(objects: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    if node is None:
        unavailable("node not found: apt-get install -y nodejs")
    if not (MODELS / "package.json").is_file():
        unavailable(f"{MODELS} missing: {INSTALL_HINT}")
    return subprocess.run([node, str(HELM_DIR / "tools" / "validate-crs.mjs")],
                          input=json.dumps(objects), capture_output=True, text=True,
                          timeout=60, env={**os.environ, "CHART_TOOLS_DIR": str(TOOLS)})


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_helm_lint_passes(values_file):
    result = run_helm("lint", "--strict", str(CHART), "-f", str(CHART / "ci" / values_file))
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_every_rendered_object_validates(values_file):
    objects = rendered(values_file)
    problems = [p for o in objects if not is_custom(o) for p in validate_kubernetes(o)]
    assert problems == []
    custom = [o for o in objects if is_custom(o)]
    if custom:
        result = validate_custom(custom)
        assert result.returncode == 0, result.stdout + result.stderr
        assert sorted(result.stdout.split("\n")[:-1]) == sorted(
            f"ok {o['kind']}/{o['metadata']['name']}" for o in custom)


def test_the_validators_reject_a_broken_object():
    objects = rendered("full-values.yaml")
    deployment = json.loads(json.dumps(one(objects, "Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    assert [p.split(": ")[1] for p in validate_kubernetes(deployment)] == [
        "spec.template.spec.containers.0.readinessProbe"] * 2
    rule = json.loads(json.dumps(one(objects, "PrometheusRule")))
    rule["spec"]["groups"][0]["rules"][0]["for"] = "5 minutes"
    result = validate_custom([rule])
    assert result.returncode == 1
    assert result.stdout.startswith("invalid PrometheusRule/rel-celery-jobmon: "
                                    "data/spec/groups/0/rules/0/for must match pattern")


def test_what_each_values_file_renders():
    base = ["Deployment/rel-celery-jobmon", "PodDisruptionBudget/rel-celery-jobmon",
            "Secret/rel-celery-jobmon", "Service/rel-celery-jobmon",
            "Service/rel-celery-jobmon-metrics", "ServiceAccount/rel-celery-jobmon"]
    assert kinds(rendered("minimal-values.yaml")) == base
    assert kinds(rendered("postgres-values.yaml")) == sorted(
        [*base, "PrometheusRule/rel-celery-jobmon", "ServiceMonitor/rel-celery-jobmon"])
    assert kinds(rendered("network-policy-values.yaml")) == sorted(
        [*base, "NetworkPolicy/rel-celery-jobmon"])
    assert kinds(rendered("existing-secret-values.yaml")) == sorted(
        [*(k for k in base if not k.startswith("Secret/")), "ServiceMonitor/rel-celery-jobmon"])
    assert kinds(rendered("clusters-values.yaml")) == sorted(
        [f"{kind}/rel-celery-jobmon-{cluster}{suffix}" for cluster in ("eu-1", "us-1")
         for kind, suffix in [("Deployment", ""), ("PodDisruptionBudget", ""),
                              ("Service", ""), ("Service", "-metrics"),
                              ("ServiceAccount", ""), ("ServiceMonitor", "")]]
        + ["Secret/rel-celery-jobmon-eu-1", "PrometheusRule/rel-celery-jobmon"])
    assert kinds(rendered("full-values.yaml")) == sorted([
        "ConfigMap/rel-celery-jobmon-dashboards", "Deployment/rel-celery-jobmon",
        "PodDisruptionBudget/rel-celery-jobmon", "PrometheusRule/rel-celery-jobmon",
        "Secret/rel-celery-jobmon", "Service/rel-celery-jobmon",
        "Service/rel-celery-jobmon-metrics", "ServiceAccount/jobmon",
        "ServiceMonitor/rel-celery-jobmon"])


@pytest.mark.parametrize(("source", "copy", "pattern"), [
    ("prometheus/rules", "files/rules", "*.yml"),
    ("grafana/dashboards", "files/dashboards", "*.json"),
])
def test_the_chart_ships_the_one_source_unchanged(source, copy, pattern):
    originals = {p.name: p.read_bytes() for p in (ROOT / source).glob(pattern)}
    copies = {p.name: p.read_bytes() for p in (CHART / copy).glob(pattern)}
    assert originals, source
    assert sorted(copies) == sorted(originals), SYNC_HINT
    differ = sorted(name for name in originals if copies[name] != originals[name])
    assert differ == [], f"{differ} differ from {source}: {SYNC_HINT}"


def test_the_prometheus_rule_holds_every_rule_file_in_order():
    groups = []
    for path in sorted((ROOT / "prometheus" / "rules").glob("*.yml")):
        groups += yaml.safe_load(path.read_text())["groups"]
    rule = one(rendered("full-values.yaml"), "PrometheusRule")
    assert rule["spec"]["groups"] == groups
    assert rule["metadata"]["namespace"] == "apps"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_the_dashboards_config_map_carries_the_sidecar_label():
    config_map = one(rendered("full-values.yaml"), "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Celery"}
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["data"] == {
        p.name: p.read_text() for p in (ROOT / "grafana" / "dashboards").glob("*.json")}


def test_the_pod_runs_non_root_on_a_read_only_root_filesystem():
    objects = rendered("minimal-values.yaml")
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    main = container(objects)
    assert pod["securityContext"]["runAsNonRoot"] is True
    # The image's user (docker/Dockerfile: useradd --uid 10001).
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["automountServiceAccountToken"] is False
    assert main["securityContext"] == {"allowPrivilegeEscalation": False,
                                       "readOnlyRootFilesystem": True,
                                       "capabilities": {"drop": ["ALL"]}}
    mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
    assert mounts == {"/var/lib/celery-jobmon": "data", "/tmp": "tmp"}
    assert {v["name"]: sorted(v) for v in pod["volumes"]} == {
        "data": ["emptyDir", "name"], "tmp": ["emptyDir", "name"]}
    env = {e["name"]: e.get("value") for e in main["env"]}
    # The SQLite history goes to $XDG_DATA_HOME/celery-jobmon/: the writable emptyDir.
    assert env["XDG_DATA_HOME"] == "/var/lib/celery-jobmon"
    assert main["image"] == "celery-jobmon:0.1.0"
    assert main["args"] == ["serve"]


def test_probes_ask_healthz_and_readyz():
    main = container(rendered("minimal-values.yaml"))
    assert {probe: (main[probe]["httpGet"]["path"], main[probe]["httpGet"]["scheme"])
            for probe in ("startupProbe", "livenessProbe", "readinessProbe")} == {
        "startupProbe": ("/healthz", "HTTP"), "livenessProbe": ("/healthz", "HTTP"),
        "readinessProbe": ("/readyz", "HTTP")}
    tls = container(rendered("existing-secret-values.yaml"))
    assert tls["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"


def test_the_service_monitor_scrapes_every_pod_ready_or_not():
    objects = rendered("postgres-values.yaml")
    metrics = one(objects, "Service", "rel-celery-jobmon-metrics")
    # A replica whose broker is down answers /readyz 503: still scraped, so its
    # celery_jobmon_broker_connected 0 reaches Prometheus.
    assert metrics["spec"]["publishNotReadyAddresses"] is True
    monitor = one(objects, "ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert all(one(objects, "Service", "rel-celery-jobmon")["metadata"]["labels"].get(k) == v
               for k, v in selector.items()) is False
    assert all(metrics["metadata"]["labels"][k] == v for k, v in selector.items())
    assert monitor["spec"]["endpoints"] == [
        {"port": "http", "path": "/metrics", "scheme": "http", "interval": "30s",
         "scrapeTimeout": "10s"}]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["apps"]}


def test_an_existing_secret_is_referenced_not_created():
    objects = rendered("existing-secret-values.yaml")
    assert [o for o in objects if o["kind"] == "Secret"] == []
    env = {e["name"]: e for e in container(objects)["env"]}
    refs = {name: e["valueFrom"]["secretKeyRef"] for name, e in env.items() if "valueFrom" in e}
    assert refs == {
        "JOBMON_BROKER_URL": {"name": "celery-jobmon-credentials", "key": "CELERY_BROKER_URL"},
        "JOBMON_HISTORY_URL": {"name": "celery-jobmon-credentials",
                               "key": "JOBMON_HISTORY_URL"},
        "JOBMON_RESULT_BACKEND": {"name": "celery-jobmon-credentials",
                                  "key": "CELERY_RESULT_BACKEND"},
    }
    assert env["JOBMON_API_TOKEN_FILE"]["value"] == "/etc/celery-jobmon/api/token"
    assert env["JOBMON_TLS_CERT"]["value"] == "/etc/celery-jobmon/tls/tls.crt"
    annotations = one(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations is None or "checksum/secret" not in annotations


def test_credentials_stay_in_the_secret():
    objects = rendered("full-values.yaml")
    secret = one(objects, "Secret")
    deployment_text = yaml.safe_dump(one(objects, "Deployment"))
    for value in secret["stringData"].values():
        for line in value.splitlines():
            assert line.strip() not in deployment_text


def test_one_exporter_per_cluster_with_its_own_values_over_the_shared_ones():
    objects = rendered("clusters-values.yaml")
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    pods = {name: d["spec"]["template"]["metadata"]["labels"] for name, d in deployments.items()}
    # No Deployment selects the other's pods.
    for name, deployment in deployments.items():
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert [other for other, labels in pods.items()
                if selector.items() <= labels.items()] == [name]
    env = {name: {e["name"]: e.get("value", e.get("valueFrom")) for e in container([d])["env"]}
           for name, d in deployments.items()}
    eu, us = env["rel-celery-jobmon-eu-1"], env["rel-celery-jobmon-us-1"]
    assert eu["JOBMON_BROKER_URL"] == {
        "secretKeyRef": {"name": "rel-celery-jobmon-eu-1", "key": "broker-url"}}
    assert us["JOBMON_BROKER_URL"] == {"secretKeyRef": {"name": "celery-us-1", "key": "broker-url"}}
    assert (eu["JOBMON_MAX_TASK_NAMES"], us["JOBMON_MAX_TASK_NAMES"]) == ("500", "500")
    # Every series of an exporter carries its cluster (clusterLabel), then the shared labels.
    assert (eu["JOBMON_CONST_LABEL"], us["JOBMON_CONST_LABEL"]) == ("cluster=eu-1 env=prod",
                                                                  "cluster=us-1 env=prod")
    # An entry's false replaces the shared true; its null-free keys leave the others alone.
    assert (eu["JOBMON_TASK_HOSTNAME_LABEL"], us["JOBMON_TASK_HOSTNAME_LABEL"]) == ("true", "false")
    assert "JOBMON_ENABLE_EVENTS" not in eu and us["JOBMON_ENABLE_EVENTS"] == "false"
    assert [deployments[f"rel-celery-jobmon-{c}"]["spec"]["replicas"] for c in ("eu-1", "us-1")
            ] == [1, 2]
    monitors = [o for o in objects if o["kind"] == "ServiceMonitor"]
    services = {o["metadata"]["name"]: o["metadata"]["labels"] for o in objects
                if o["kind"] == "Service"}
    # One job per cluster: each ServiceMonitor scrapes its own metrics Service only.
    assert sorted(
        [name for name, labels in services.items()
         if m["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        for m in monitors) == [["rel-celery-jobmon-eu-1-metrics"],
                               ["rel-celery-jobmon-us-1-metrics"]]


def test_the_network_policy_admits_the_listed_peers_and_egress():
    policy = one(rendered("network-policy-values.yaml"), "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert len(policy["spec"]["ingress"][0]["from"]) == 2
    assert [rule.get("ports") for rule in policy["spec"]["egress"]] == [
        [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
        [{"port": 6379, "protocol": "TCP"}], [{"port": 5432, "protocol": "TCP"}]]


@pytest.mark.parametrize(("args", "message"), [
    ((), "secrets.brokerUrl (or secrets.existingSecret with existingSecretKeys.brokerUrl) "
         "is required"),
    (("--set", "secrets.brokerUrl=redis://r:6379/0", "--set",
      "secrets.apiToken=0123456789abcdef", "--set", "config.apiTokenFile=/t"),
     "secrets.apiToken and config.apiTokenFile: give one, not both"),
    (("--set", "secrets.brokerUrl=redis://r:6379/0", "--set", "config.maxTaskNamez=5"),
     "additional properties 'maxTaskNamez' not allowed"),
    (("--set", "secrets.brokerUrl=redis://r:6379/0", "--set", "config.workerTimeout=soon"),
     "/config/workerTimeout"),
    (("--set", "secrets.brokerUrl=redis://r:6379/0", "--set", "clusters[0].name=eu",
      "--set", "clusters[1].name=eu"), "clusters: the name eu is given twice"),
    (("--set", "clusters[0].name=eu", "--set", "clusters[1].name=us",
      "--set", "clusters[1].secrets.brokerUrl=redis://r:6379/0"),
     "secrets.brokerUrl (or secrets.existingSecret with existingSecretKeys.brokerUrl) "
     "is required"),
])
def test_bad_values_are_refused_with_the_reason(args, message):
    result = run_helm("template", "rel", str(CHART), *args, check=False)
    assert result.returncode == 1
    assert message in result.stderr


def serve_envvars() -> dict[str, str]:
    """{JOBMON_* variable: flag} of every ``serve`` option."""
    found = {}
    for param in serve.params:
        if isinstance(param, click.Option) and param.envvar:
            envvar = param.envvar if isinstance(param.envvar, str) else param.envvar[0]
            found[envvar] = param.opts[0]
    return found


def test_every_serve_option_reaches_the_container():
    rendered_env: set[str] = set()
    for values_file in VALUES_FILES:
        for deployment in rendered(values_file):
            if deployment["kind"] == "Deployment":
                rendered_env |= {e["name"] for e in container([deployment])["env"]}
    options = serve_envvars()
    forgotten = sorted(f"{flag} ({env})" for env, flag in options.items()
                       if env not in rendered_env)
    assert forgotten == [], "add them to values.yaml config (or secrets), the schema and " \
                            "ci/full-values.yaml"
    unknown = sorted(env for env in rendered_env
                     if env.startswith("JOBMON_") and env not in options)
    assert unknown == []


def test_every_value_is_in_the_schema():
    schema = json.loads((CHART / "values.schema.json").read_text())

    def missing(values: dict[str, Any], node: dict[str, Any], path: str) -> list[str]:
        found = []
        for key, value in values.items():
            child = node.get("properties", {}).get(key)
            if child is None:
                found.append(path + key)
            elif isinstance(value, dict) and value and "properties" in child:
                found += missing(value, child, f"{path}{key}.")
        return found

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert missing(values, schema, "") == []
    assert sorted(values["config"]) == sorted(schema["properties"]["config"]["properties"])
    full = yaml.safe_load((CHART / "ci" / "full-values.yaml").read_text())
    assert sorted(full["config"]) == sorted(values["config"])


def test_the_full_values_environment_is_what_serve_accepts(tmp_path, monkeypatch):
    """The container's environment (Secret entries resolved, mounted files written) parses
    into the settings the values say, through ``serve``'s own options.
    """
    objects = rendered("full-values.yaml")
    secret = one(objects, "Secret")["stringData"]
    main = container(objects)
    mounted = tmp_path / "secrets"
    mounted.mkdir()
    for key in ("ui-users", "ui-session-secret"):
        (mounted / key).write_text(secret[key])
    for name in list(os.environ):
        if name.startswith("JOBMON_") or name == "CELERY_BROKER_URL":
            monkeypatch.delenv(name)
    for entry in main["env"]:
        if "valueFrom" in entry:
            value = secret[entry["valueFrom"]["secretKeyRef"]["key"]]
        else:
            value = entry["value"].replace("/etc/celery-jobmon/secrets", str(mounted))
        monkeypatch.setenv(entry["name"], value)
    context = serve.make_context("serve", [])
    settings = settings_from(dict(context.params))
    assert settings.listen == ("0.0.0.0", 9900)
    assert settings.broker_url == "amqp://jobmon:broker-password@rabbitmq:5672/app"
    assert dict(settings.transport_options) == {"global_keyprefix": "app1:", "sep": ":"}
    assert settings.accept_content == ("json", "msgpack")
    assert settings.enable_events is False
    assert settings.runtime_buckets == (0.01, 0.1, 1, 10, 60, 600, 3600)
    assert settings.queue_wait_buckets == (0.1, 1, 10, 100)
    assert settings.max_tasks_in_memory == 1_000_000
    assert settings.max_task_names == 200
    assert settings.const_labels == (("region", "eu"), ("env", "prod"))
    assert settings.inspect_interval == 30
    assert settings.clock_offset_warning == 0.5
    assert settings.task_hostname_label is True
    assert settings.redis_fast_path is False
    assert settings.amqp_fast_path is False
    assert settings.history_upgrade is False
    assert settings.queues == ("a", "b", "orphans")
    assert settings.history_exclude_tasks == ("celery.*", "app.tasks.heartbeat")
    assert settings.history_url == "postgresql+psycopg://jobmon:db-password@postgres:5432/jobmon"
    assert settings.history_max_rows == 5_000_000
    assert settings.api_token == "0123456789abcdef0123456789abcdef"
    assert settings.api_listen == ("0.0.0.0", 9809)
    assert settings.ui_users_file == str(mounted / "ui-users")
    assert settings.ui_session_secret == secret["ui-session-secret"].strip()
    assert settings.grafana_url == "https://grafana.example.com"
    assert settings.external_url == "https://jobmon.example.com/ui"
    assert settings.beat_app == "examples.tasks:app"
    assert settings.redbeat_url == "redis://:beat-password@redis:6379/2"
    assert settings.redbeat_key_prefix == "app1:redbeat:"
    assert settings.django_beat_url == (
        "postgresql+psycopg://django:django-password@postgres:5432/django")
    assert settings.beat_timezone == "Europe/Berlin"
    assert settings.expect == (("reports.nightly", 86400.0), ("cleanup", 3600.0))
    assert (settings.periodic_interval, settings.periodic_grace) == (30, 120)
    assert settings.chord_stuck_after == 600


def test_the_app_version_is_the_package_version():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'\nversion = "{chart["appVersion"]}"\n' in pyproject


def test_the_image_holds_every_package_the_exporter_imports():
    """The chart runs docker/Dockerfile's image: it must copy every package pyproject.toml
    installs (``serve`` imports ui/ at start) and .dockerignore must let it through.
    """
    import tomllib

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    found = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = [p.rstrip("*") for p in found]
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text().splitlines()
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert [p for p in packages if f"COPY {p} ./{p}" not in dockerfile] == []
    assert [p for p in packages if f"!{p}/" not in ignore] == []


def test_the_packaged_chart_carries_rules_and_dashboards(tmp_path):
    run_helm("package", str(CHART), "--destination", str(tmp_path))
    (package,) = tmp_path.glob("celery-jobmon-*.tgz")
    with tarfile.open(package) as archive:
        names = sorted(n for n in archive.getnames() if "/files/" in n or "/ci/" in n)
    assert names == sorted(
        [f"celery-jobmon/files/rules/{p.name}" for p in (ROOT / "prometheus/rules").glob("*.yml")]
        + [f"celery-jobmon/files/dashboards/{p.name}"
           for p in (ROOT / "grafana/dashboards").glob("*.json")])
    result = run_helm("template", "rel", str(package), "-f",
                      str(CHART / "ci" / "full-values.yaml"), "--namespace", "apps")
    objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert one(objects, "PrometheusRule") == one(rendered("full-values.yaml"), "PrometheusRule")
    assert one(objects, "ConfigMap") == one(rendered("full-values.yaml"), "ConfigMap")
