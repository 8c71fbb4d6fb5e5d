"""Static checks of the deployment files: kustomize renders, Kubernetes and KEDA schemas, the compose
specification, Prometheus rules, the Grafana dashboard, and consistency with the code (settings,
stream and consumer names, ports)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from services.common import messaging
from services.common.config import Settings, listen_port
from services.common.grpc_server import LIVENESS_SERVICE
from tests.deploy.conftest import (
    BIN,
    COMPOSE_FILE,
    DEPLOY,
    K8S,
    OVERLAYS,
    ROOT,
    compose_doc,
    need_tool,
    render_overlay,
)

SETTINGS = set(Settings.model_fields)
DEFAULTS = Settings()
SERVICES = ("gateway", "jobs", "storage", "processor")
GRPC_PORTS = {
    "jobs": listen_port(DEFAULTS.jobs_addr),
    "storage": listen_port(DEFAULTS.storage_addr),
    "processor": listen_port(DEFAULTS.processor_addr),
}
# What each service cannot run without, beyond the shared settings.
NEEDS = {
    "gateway": {
        "RADIOLOGY_JOBS_ADDR",
        "RADIOLOGY_STORAGE_ADDR",
        "RADIOLOGY_PROCESSOR_ADDR",
        "RADIOLOGY_HTTP_HOST",
        "RADIOLOGY_HTTP_PORT",
    },
    "jobs": {
        "RADIOLOGY_JOBS_ADDR",
        "RADIOLOGY_STORAGE_ADDR",
        "RADIOLOGY_LISTEN_HOST",
        "RADIOLOGY_NATS_URL",
        "RADIOLOGY_NATS_USER",
        "RADIOLOGY_NATS_PASSWORD",
        "RADIOLOGY_DATABASE_URL",
    },
    "storage": {
        "RADIOLOGY_STORAGE_ADDR",
        "RADIOLOGY_LISTEN_HOST",
        "RADIOLOGY_STORAGE_URL",
        "RADIOLOGY_S3_ACCESS_KEY",
        "RADIOLOGY_S3_SECRET_KEY",
    },
    "processor": {
        "RADIOLOGY_PROCESSOR_ADDR",
        "RADIOLOGY_STORAGE_ADDR",
        "RADIOLOGY_LISTEN_HOST",
        "RADIOLOGY_NATS_URL",
        "RADIOLOGY_NATS_USER",
        "RADIOLOGY_NATS_PASSWORD",
        "RADIOLOGY_ANONYMIZE_SECRET",
    },
}


def _setting(var: str) -> str:
    assert var.startswith("RADIOLOGY_"), var
    return var[len("RADIOLOGY_") :].lower()


# --- Kubernetes -------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders(overlay: str) -> None:
    kinds = {o["kind"] for o in render_overlay(overlay)}
    assert {"Deployment", "Service", "ServiceAccount", "ConfigMap", "StatefulSet", "Namespace"} <= kinds


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("version", ["1.30.0", "1.37.0"])
def test_objects_validate_strictly_against_kubernetes(overlay: str, version: str) -> None:
    import kubernetes_validate

    for obj in render_overlay(overlay):
        if obj["apiVersion"].startswith("keda.sh/"):
            continue  # a custom resource: checked against KEDA's schema below
        kubernetes_validate.validate(obj, version, strict=True)


def test_kubernetes_validate_command_line_also_passes(tmp_path: Path) -> None:
    """The same check as an operator would run it: `kubernetes-validate --strict` on the files."""
    tool = need_tool("kubernetes-validate", "RADIOLOGY_REQUIRE_KUBECTL", "kubernetes-validate CLI")
    import yaml

    files = []
    for overlay in OVERLAYS:
        path = tmp_path / f"{overlay}.yaml"
        path.write_text(
            yaml.safe_dump_all(
                [o for o in render_overlay(overlay) if not o["apiVersion"].startswith("keda.sh/")]
            )
        )
        files.append(str(path))
    result = subprocess.run(
        [tool, "--strict", "--quiet", "-k", "1.30.0", *files], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_scaled_object_matches_keda_schema_and_the_code() -> None:
    schema = json.loads((K8S / "schemas" / "keda-scaledobject-v1alpha1.json").read_text())
    objects = render_overlay("prod")
    (scaled,) = [o for o in objects if o["kind"] == "ScaledObject"]
    jsonschema.validate(scaled, schema)
    assert scaled["spec"]["scaleTargetRef"]["name"] == "processor"
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "nats-jetstream"
    meta = trigger["metadata"]
    assert meta["stream"] == messaging.TASKS_STREAM
    assert meta["consumer"] == messaging.PROCESSOR_DURABLE
    assert int(meta["lagThreshold"]) > 0
    # KEDA's lag counts the tasks the replicas already hold (num_ack_pending) with the waiting ones:
    # a threshold above the tasks one replica holds would scale busy replicas away once the queue
    # is empty. The processor's own settings (ConfigMap + its env) say how many it holds.
    (processor,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "processor"]
    env = _k8s_env(objects, processor["spec"]["template"]["spec"]["containers"][0])
    held = Settings(workers=int(env["RADIOLOGY_WORKERS"]), concurrency=int(env["RADIOLOGY_CONCURRENCY"]))
    assert int(meta["lagThreshold"]) <= held.task_concurrency, (meta["lagThreshold"], held.task_concurrency)
    namespace = scaled["metadata"]["namespace"]
    host, port = meta["natsServerMonitoringEndpoint"].rsplit(":", 1)
    assert host == f"nats-headless.{namespace}.svc.cluster.local"
    (nats,) = [o for o in objects if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "nats"]
    ports = {
        p["name"]: p["containerPort"] for p in nats["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert int(port) == ports["monitor"] == 8222
    # A schema that accepts anything would prove nothing: a wrong field is refused.
    bad = json.loads(json.dumps(scaled))
    bad["spec"]["minReplicaCount"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def _containers(objects: list[dict]) -> dict[str, tuple[dict, dict]]:
    """Deployment name -> (pod spec, its first container)."""
    return {
        o["metadata"]["name"]: (o["spec"]["template"]["spec"], o["spec"]["template"]["spec"]["containers"][0])
        for o in objects
        if o["kind"] == "Deployment"
    }


def _k8s_env(objects: list[dict], container: dict) -> dict[str, str | None]:
    """Environment of a container: its ConfigMap's values, then its own (Secret refs as None)."""
    env: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        (cm,) = [
            o
            for o in objects
            if o["kind"] == "ConfigMap" and o["metadata"]["name"] == source["configMapRef"]["name"]
        ]
        env.update(cm["data"])
    for item in container.get("env", []):
        env[item["name"]] = item.get("value")
    return env


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_settings_exist_and_each_service_gets_what_it_needs(overlay: str) -> None:
    objects = render_overlay(overlay)
    deployments = _containers(objects)
    assert set(deployments) == set(SERVICES)
    for name, (_, container) in deployments.items():
        env = _k8s_env(objects, container)
        unknown = {v for v in env if v.startswith("RADIOLOGY_") and _setting(v) not in SETTINGS}
        assert not unknown, f"{name}: not in services/common/config.py: {unknown}"
        missing = NEEDS[name] - set(env)
        assert not missing, f"{name} lacks {missing}"
        Settings(**{_setting(k): v for k, v in env.items() if k.startswith("RADIOLOGY_") and v is not None})
        assert container["args"] == [name]
    # Every Secret the pods read exists in the dev overlay (prod expects them from the operator).
    if overlay == "dev":
        secrets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Secret"}
        for obj in objects:
            if obj["kind"] not in ("Deployment", "StatefulSet"):
                continue
            for c in obj["spec"]["template"]["spec"]["containers"]:
                for item in c.get("env", []):
                    ref = item.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        if ref.get("optional"):
                            continue  # a key the operator adds only for the feature that needs it
                        assert ref["name"] in secrets, ref
                        assert ref["key"] in secrets[ref["name"]]["data"], ref
    else:
        assert not [o for o in objects if o["kind"] == "Secret"], "prod must not ship Secrets"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_ports_probes_and_pod_hardening(overlay: str) -> None:
    objects = render_overlay(overlay)
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    for name, (pod, container) in _containers(objects).items():
        env = _k8s_env(objects, container)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        if name == "gateway":
            assert ports["http"] == int(env["RADIOLOGY_HTTP_PORT"])
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        else:
            port = listen_port(env[f"RADIOLOGY_{name.upper()}_ADDR"])
            assert port == GRPC_PORTS[name] == ports["grpc"]
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert container[probe]["grpc"]["port"] == port, (name, probe)
            # Readiness follows the dependencies (the overall entry); liveness only the process.
            for probe in ("startupProbe", "readinessProbe"):
                assert container[probe]["grpc"].get("service", "") == "", (name, probe)
            assert container["livenessProbe"]["grpc"]["service"] == LIVENESS_SERVICE, name
            assert ports["metrics"] == int(env["RADIOLOGY_METRICS_PORT"])
            # Other services reach it at the address in the ConfigMap: "<service>:<port>".
            host = env[f"RADIOLOGY_{name.upper()}_ADDR"].rsplit(":", 1)[0]
            assert host == name
        svc_ports = {p["port"] for p in services[name]["spec"]["ports"]}
        assert set(ports.values()) <= svc_ports, name
        # Hardening.
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
        assert pod["topologySpreadConstraints"]
        assert pod["serviceAccountName"] == name
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/tmp", "/var/lib/radiology"} <= mounts
        # Graceful stop outlasts the drain, and for the processor the ack wait too.
        grace = float(env["RADIOLOGY_SHUTDOWN_GRACE_SECONDS"])
        assert pod["terminationGracePeriodSeconds"] > grace
        if name == "processor":
            assert pod["terminationGracePeriodSeconds"] > float(env["RADIOLOGY_ACK_WAIT_SECONDS"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grpc_services_are_headless_and_the_gateway_is_not(overlay: str) -> None:
    """The gRPC clients balance calls over the addresses a peer's name resolves to: each gRPC
    Service must resolve to its pods (headless, ready pods only), on the ports the pods listen on
    (no cluster IP maps ports). The gateway's HTTP Service, behind the ingress, keeps its cluster IP."""
    objects = render_overlay(overlay)
    services = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "Service"}
    pods = _containers(objects)
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    for name in GRPC_PORTS:
        spec = services[name]
        assert spec.get("clusterIP") == "None", f"the {name} Service must be headless"
        assert spec.get("type", "ClusterIP") == "ClusterIP", name
        assert not spec.get("publishNotReadyAddresses"), f"{name}: unready pods must not be resolved"
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert spec["selector"].items() <= labels.items(), name
        env = _k8s_env(objects, pods[name][1])
        port = listen_port(env[f"RADIOLOGY_{name.upper()}_ADDR"])
        (grpc_port,) = [p for p in spec["ports"] if p["name"] == "grpc"]
        assert grpc_port["port"] == port, name
        container_ports = {p["name"]: p["containerPort"] for p in pods[name][1]["ports"]}
        assert container_ports[grpc_port["targetPort"]] == port, name
    assert services["gateway"].get("clusterIP") != "None", "the gateway's Service keeps its cluster IP"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_replicas_and_disruption_budgets(overlay: str) -> None:
    objects = render_overlay(overlay)
    pdbs = {
        o["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for o in objects
        if o["kind"] == "PodDisruptionBudget"
    }
    scaled = {
        o["spec"]["scaleTargetRef"]["name"]: o["spec"].get("minReplicaCount", o["spec"].get("minReplicas"))
        for o in objects
        if o["kind"] in ("ScaledObject", "HorizontalPodAutoscaler")
    }
    for obj in objects:
        if obj["kind"] not in ("Deployment", "StatefulSet"):
            continue
        name = obj["metadata"]["name"]
        replicas = obj["spec"].get("replicas", scaled.get(name, 1))
        if overlay == "dev":
            assert replicas == 1, name
        if replicas > 1:
            assert name in pdbs, f"{name} runs {replicas} replicas without a PodDisruptionBudget"
    # Every stream has a copy on each NATS server (at most 3): more than the servers cannot be placed.
    (nats_set,) = [o for o in objects if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "nats"]
    (_, jobs_container) = _containers(objects)["jobs"]
    stream_replicas = int(_k8s_env(objects, jobs_container)["RADIOLOGY_NATS_STREAM_REPLICAS"])
    servers = nats_set["spec"]["replicas"]
    assert stream_replicas == min(3, servers), (stream_replicas, servers)
    if overlay == "prod":
        (nats,) = [o for o in objects if o["kind"] == "StatefulSet"]
        assert nats["spec"]["replicas"] == 3
        args = nats["spec"]["template"]["spec"]["containers"][0]["args"]
        routes = next(a for a in args if a.startswith("--routes="))
        assert routes.count("nats-headless:6222") == 3
        assert scaled["processor"] >= 1 and scaled["gateway"] >= 2
        assert {"NetworkPolicy", "Ingress"} <= {o["kind"] for o in objects}
        workloads = {o["metadata"]["name"] for o in objects if o["kind"] in ("StatefulSet", "Service")}
        assert not {"postgres", "minio"} & workloads, "prod uses an external database and S3"
    else:
        assert {"postgres", "minio", "nats"} <= {
            o["metadata"]["name"] for o in objects if o["kind"] == "StatefulSet"
        }


def test_network_policies_let_only_the_gateway_in_from_outside() -> None:
    objects = render_overlay("prod")
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    deny = next(p for p in policies if p["metadata"]["name"] == "default-deny-all")
    assert deny["spec"]["podSelector"] == {} and set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            for peer in rule.get("from", []):
                ns = (
                    peer.get("namespaceSelector", {})
                    .get("matchLabels", {})
                    .get("kubernetes.io/metadata.name")
                )
                if ns == "ingress-nginx":
                    assert policy["metadata"]["name"] == "gateway"
                if ns == "keda":
                    assert policy["metadata"]["name"] == "nats"
                    assert [p["port"] for p in rule["ports"]] == [8222], "KEDA reaches only monitoring"
                assert peer.get("ipBlock") is None
    ingress = next(o for o in objects if o["kind"] == "Ingress")
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert annotations["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "off"
    size = int(annotations["nginx.ingress.kubernetes.io/proxy-body-size"].rstrip("m")) * 1024 * 1024
    assert size >= DEFAULTS.max_job_bytes
    assert ingress["spec"]["tls"]


# --- compose ------------------------------------------------------------------------------------


def test_compose_file_validates_against_the_compose_spec(tmp_path: Path) -> None:
    tool = need_tool("check-jsonschema", "RADIOLOGY_REQUIRE_KUBECTL", "compose-spec validation")
    # The override file uses compose's YAML merge tags (`!override`), which a plain YAML loader
    # does not know; the document under them is what the schema checks.
    ci = tmp_path / "ci.yml"
    ci.write_text(re.sub(r"!(override|reset) ", "", (DEPLOY / "compose" / "ci.yml").read_text()))
    for path in (COMPOSE_FILE, ci):
        result = subprocess.run(
            [tool, "--builtin-schema", "vendor.compose-spec", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def _compose_env(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _interpolate_defaults(value: str) -> str:
    return re.sub(r"\$\{[A-Z0-9_]+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", value)


def test_compose_services_settings_ports_and_policies() -> None:
    doc = compose_doc()
    services = doc["services"]
    assert {*SERVICES, "nats", "postgres", "minio", "prometheus", "grafana"} <= set(services)
    for name in SERVICES:
        svc = services[name]
        env = _compose_env(svc)
        unknown = {v for v in env if v.startswith("RADIOLOGY_") and _setting(v) not in SETTINGS}
        assert not unknown, f"{name}: not in services/common/config.py: {unknown}"
        # RADIOLOGY_LISTEN_HOST may come from the image (0.0.0.0); the rest must be set here.
        assert NEEDS[name] - {"RADIOLOGY_LISTEN_HOST"} <= set(env), (name, NEEDS[name] - set(env))
        values = {_setting(k): _interpolate_defaults(v) for k, v in env.items()}
        Settings(**values)
        assert svc["command"] == [name]
        assert svc["read_only"] is True
        assert svc["restart"] == "unless-stopped"
        assert svc["healthcheck"]["test"] == ["CMD", "radiology", "healthcheck", name]
        for dep in svc.get("depends_on", {}).values():
            assert dep["condition"] == "service_healthy"
        if name != "gateway":
            assert listen_port(values[f"{name}_addr"]) == GRPC_PORTS[name]
    assert services["processor"]["deploy"]["replicas"] == 2
    # One NATS server in compose: one copy of each stream (more could not be placed).
    jobs_env = _compose_env(services["jobs"])
    assert _interpolate_defaults(jobs_env["RADIOLOGY_NATS_STREAM_REPLICAS"]) == "1"
    gateway_env = {
        _setting(k): _interpolate_defaults(v) for k, v in _compose_env(services["gateway"]).items()
    }
    assert services["gateway"]["ports"] == [f"${{GATEWAY_PORT:-8000}}:{gateway_env['http_port']}"]
    for name, svc in services.items():
        assert "healthcheck" in svc, name
        assert "restart" in svc, name
        for vol in svc.get("volumes", []):
            source = vol.split(":", 1)[0]
            assert source.startswith("./") or source in doc["volumes"], (name, vol)
    # NATS: never published except monitoring, and always with the shared config.
    nats = services["nats"]
    assert all(":8222" in p and p.startswith("127.0.0.1:") for p in nats["ports"])
    assert "./deploy/k8s/components/nats/nats-auth.conf:/etc/nats/nats-auth.conf:ro" in nats["volumes"]


def test_compose_has_no_secrets_only_local_defaults() -> None:
    text = COMPOSE_FILE.read_text()
    for match in re.finditer(r"\$\{([A-Z0-9_]*(?:PASSWORD|SECRET)[A-Z0-9_]*)(?::-([^}]*))?\}", text):
        name, default = match.groups()
        assert not default or "local" in default, f"{name} has a default that does not say it is local"
    example = (ROOT / ".env.example").read_text()
    interpolated = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    documented = set(re.findall(r"^([A-Z0-9_]+)=", example, re.MULTILINE))
    assert interpolated <= documented, f"not in .env.example: {interpolated - documented}"
    unknown = {
        v
        for v in documented
        if v.startswith("RADIOLOGY_") and v != "RADIOLOGY_IMAGE" and _setting(v) not in SETTINGS
    }
    assert not unknown, unknown


# Settings that the deployment itself wires (addresses, credentials, paths), not an operator's choice.
WIRED_BY_THE_DEPLOYMENT = {
    "data_dir", "jobs_addr", "storage_addr", "processor_addr", "listen_host", "metrics_port",
    "nats_url", "nats_user", "nats_password", "nats_creds_file", "database_url", "storage_url",
    "storage_fsync", "s3_access_key", "s3_secret_key", "http_host", "http_port", "web_dir",
}


def test_every_operator_setting_is_documented_and_reaches_its_services() -> None:
    """A setting of services/common/config.py is in .env.example, passed by docker-compose.yml to
    a service and set in the Kubernetes ConfigMap (or a Secret), unless the deployment wires it."""
    example = set(re.findall(r"^RADIOLOGY_([A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    compose = set(re.findall(r"\$\{RADIOLOGY_([A-Z0-9_]+)", COMPOSE_FILE.read_text()))
    objects = render_overlay("dev")
    k8s: set[str] = set()
    for _, container in _containers(objects).values():
        k8s |= {_setting(v).upper() for v in _k8s_env(objects, container) if v.startswith("RADIOLOGY_")}
    operator = {name.upper() for name in SETTINGS - WIRED_BY_THE_DEPLOYMENT}
    assert operator - example == set(), "not in .env.example"
    assert operator - compose == set(), "not passed by docker-compose.yml"
    assert operator - k8s == set(), "not set in deploy/k8s"


def test_the_anonymize_secret_reaches_the_processor_alone_and_works() -> None:
    """RADIOLOGY_ANONYMIZE_SECRET keys anonymize's UID replacement: compose passes it to the
    processor only (from .env), Kubernetes from a Secret (never the ConfigMap) to the processor only,
    and every value shipped for local use is one the processor accepts, so anonymize runs there."""
    from services.processor.operations.anonymize import secret_problem

    var = "RADIOLOGY_ANONYMIZE_SECRET"
    services = compose_doc()["services"]
    for name in SERVICES:
        assert (var in _compose_env(services[name])) == (name == "processor"), name
    compose_default = _interpolate_defaults(_compose_env(services["processor"])[var])
    (example,) = re.findall(rf"^{var}=(.*)$", (ROOT / ".env.example").read_text(), re.MULTILINE)
    assert secret_problem(compose_default) is None and secret_problem(example) is None
    assert "local" in compose_default and "local" in example
    for overlay in OVERLAYS:
        objects = render_overlay(overlay)
        assert not [o for o in objects if o["kind"] == "ConfigMap" and var in o.get("data", {})], overlay
        for name, (_, container) in _containers(objects).items():
            items = [item for item in container.get("env", []) if item["name"] == var]
            if name != "processor":
                assert not items, (overlay, name)
                continue
            (item,) = items
            ref = item["valueFrom"]["secretKeyRef"]
            assert ref["key"] == "anonymize-secret" and not ref.get("optional"), ref
            # dev: the generated Secret's name with kustomize's hash suffix; prod: the operator's
            assert ref["name"] == "radiology-processor" or overlay == "dev", ref
            if overlay == "dev":
                secrets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Secret"}
                secret = secrets[ref["name"]]
                assert ref["name"].startswith("radiology-processor-")
                value = base64.b64decode(secret["data"]["anonymize-secret"]).decode()
                assert secret_problem(value) is None and "dev" in value


# --- observability ------------------------------------------------------------------------------


def _promtool() -> str:
    return need_tool("promtool", "RADIOLOGY_REQUIRE_PROMTOOL", "Prometheus rule tests")


def test_prometheus_rules_and_config(tmp_path: Path) -> None:
    promtool = _promtool()
    prom = DEPLOY / "observability" / "prometheus"
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts.test.yml"]):
        result = subprocess.run([promtool, *args], cwd=prom, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
    config = (
        (prom / "prometheus.yml").read_text().replace("/etc/prometheus/alerts.yml", str(prom / "alerts.yml"))
    )
    (tmp_path / "prometheus.yml").write_text(config)
    result = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # It scrapes every service of the platform.
    import yaml

    jobs = {j["job_name"] for j in yaml.safe_load(config)["scrape_configs"]}
    assert set(SERVICES) <= jobs


def _metric_names() -> set[str]:
    names = set()
    for path in (ROOT / "services").rglob("*.py"):
        for match in re.finditer(r'(?:Counter|Gauge|Histogram)\(\s*"([a-z_]+)"', path.read_text()):
            names.add(match.group(1))
    return names


def test_grafana_dashboard_shows_the_seed_metrics() -> None:
    dashboard = json.loads(
        (DEPLOY / "observability" / "grafana" / "dashboards" / "radiology.json").read_text()
    )
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for needed in (
        "queue_depth",
        "worker_active_tasks",
        "task_latency_seconds_bucket",
        "api_request_rate_total",
        "error_rate_total",
    ):
        assert needed in exprs, needed
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (le) (rate(task_latency_seconds_bucket" in exprs
    # Every metric a panel or rule names is one the services export (counters get _total).
    known = _metric_names()
    rules = (DEPLOY / "observability" / "prometheus" / "alerts.yml").read_text()
    for name in set(re.findall(r"\b([a-z]+(?:_[a-z]+)+)(?:_total|_bucket)?\b", exprs + rules)):
        base = re.sub(r"_(total|bucket|sum|count)$", "", name)
        if base in known:
            continue
        assert name in {"histogram_quantile", "by"} or not name.endswith(("_seconds", "_tasks", "_depth")), (
            name
        )
    datasource = (
        DEPLOY / "observability" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
    ).read_text()
    assert all(p["datasource"]["uid"] in datasource for p in dashboard["panels"])


# --- the image ----------------------------------------------------------------------------------


def test_dockerfile_promises() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim-bookworm" in text
    assert "USER 10001:10001" in text and "STOPSIGNAL SIGTERM" in text
    assert "--no-index" in text and 'ENTRYPOINT ["radiology"]' in text
    runtime = text.split("AS runtime", 1)[1]
    assert not re.search(r"apt-get|gcc|build-essential|pip install", runtime)
    # No pip either: the venv's is uninstalled in the build stage, the base image's here.
    assert "/opt/venv/bin/pip uninstall --yes pip" in text.split("AS runtime", 1)[0]
    remove_base_pip = "python3 -m pip uninstall --yes --quiet --break-system-packages pip"
    assert remove_base_pip in runtime.split("USER 10001", 1)[0]
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "web/node_modules", "tests", ".env"} <= set(ignore)


def test_entrypoint_commands() -> None:
    entry = ROOT / "deploy" / "docker" / "entrypoint.py"
    out = subprocess.run([sys.executable, str(entry), "help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "healthcheck" in out.stdout
    # A healthcheck against nothing fails quickly and says why.
    env = {"RADIOLOGY_JOBS_ADDR": "127.0.0.1:1", "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, str(entry), "healthcheck", "jobs"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 1 and "jobs:" in out.stderr
    assert shutil.which("true") is not None
    assert (BIN / "python").exists()
