"""deploy/: valid Kubernetes, in step with .env.example, and saying what SPEC 7 asks of a
deployment (probes, grace period, a non-root pod OpenShift admits, the ledger's volume)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from tests.deploy.manifests import (
    DEPLOY,
    KUSTOMIZE_KINDS,
    REPO,
    Resource,
    documents,
    kind_name,
    kustomize_command,
    one,
    patch_files,
    problems,
    render,
    resource_files,
)

# What must never sit in the ConfigMap: passwords, the client secret, and the ledger's DSN,
# which may carry a password.
SECRET_NAME = re.compile(r"PASSWD|PASSWORD|SECRET|TOKEN|_DSN$")
PLACEHOLDER = "REPLACE-ME"


def env_example_variables() -> set[str]:
    """Every variable .env.example names, set or shown commented out with its default."""
    text = (REPO / ".env.example").read_text()
    return set(re.findall(r"^#?[ \t]*([A-Z][A-Z0-9_]*)=", text, re.MULTILINE))


def resources() -> list[Resource]:
    return [doc for path in resource_files() for doc in documents(path)]


def deployment() -> Resource:
    return one(resources(), "Deployment")


def config() -> dict[str, str]:
    data: dict[str, str] = one(resources(), "ConfigMap")["data"]
    return data


def container(deployment: Resource) -> Resource:
    [only] = deployment["spec"]["template"]["spec"]["containers"]
    found: Resource = only
    return found


# --- valid Kubernetes ---------------------------------------------------------------


def test_every_yaml_file_in_deploy_is_a_resource_a_patch_or_a_kustomization() -> None:
    """So none escapes the validation below."""
    known = set(resource_files()) | set(patch_files())
    for path in DEPLOY.rglob("*.y*ml"):
        kinds = {doc.get("kind") for doc in documents(path)}
        assert path.resolve() in known or kinds <= KUSTOMIZE_KINDS, f"{path} is used nowhere"


def test_the_resources_are_valid_against_the_kubernetes_schemas() -> None:
    found = resources()
    assert {r["kind"] for r in found} == {
        "ConfigMap",
        "Secret",
        "PersistentVolumeClaim",
        "Deployment",
        "NetworkPolicy",
    }
    assert [p for r in found for p in problems(r)] == []


def test_the_validation_catches_a_misspelt_field() -> None:
    broken = copy.deepcopy(deployment())
    broken["spec"]["template"]["spec"]["terminationGracePeriod"] = 40
    assert problems(broken)
    broken = copy.deepcopy(deployment())
    broken["spec"]["replicas"] = "one"
    assert problems(broken)


# --- in step with .env.example --------------------------------------------------------


def test_env_example_is_read_as_expected() -> None:
    variables = env_example_variables()
    # Set ones, commented-out ones with their default, and a secret among them.
    assert {"RABBIT_MQ_HOST", "RABBIT_MQ_VHOST", "LEDGER_DSN"} <= variables
    assert {v for v in variables if SECRET_NAME.search(v)} == {
        "RABBIT_MQ_PASSWD",
        "MEDIAHAVEN_API_CLIENT_SECRET",
        "MEDIAHAVEN_API_PASSWD",
        "MEDIAHAVEN_FTP_PASSWD",
        "LEDGER_DSN",
    }


def test_the_configmap_holds_every_setting_of_env_example_but_the_secrets() -> None:
    variables = env_example_variables()
    secrets = {v for v in variables if SECRET_NAME.search(v)}
    keys = set(config())
    assert sorted(variables - secrets - keys) == [], "in .env.example, missing from configmap"
    assert sorted(keys & secrets) == [], "secrets in the ConfigMap"
    assert sorted(keys - variables) == [], "not in .env.example"


def test_the_secret_holds_exactly_the_secrets_as_placeholders() -> None:
    secret = one(resources(), "Secret")
    values: dict[str, str] = secret["stringData"]
    assert "data" not in secret
    assert set(values) == {v for v in env_example_variables() if SECRET_NAME.search(v)}
    # Real values are never committed; an empty LEDGER_DSN means the SQLite ledger.
    assert {k: v for k, v in values.items() if k != "LEDGER_DSN"} == dict.fromkeys(
        set(values) - {"LEDGER_DSN"}, PLACEHOLDER
    )
    assert values["LEDGER_DSN"] == ""


def test_the_container_takes_its_environment_from_the_configmap_and_the_secret() -> None:
    sources = container(deployment())["envFrom"]
    names = {(kind, source[kind]["name"]) for source in sources for kind in source}
    assert names == {
        ("configMapRef", one(resources(), "ConfigMap")["metadata"]["name"]),
        ("secretRef", one(resources(), "Secret")["metadata"]["name"]),
    }


# --- what SPEC 7 asks of the deployment --------------------------------------------------


def test_the_probes_and_the_scrape_target_are_on_metrics_port() -> None:
    pod = deployment()["spec"]["template"]
    main = container(deployment())
    port = int(config()["METRICS_PORT"])
    assert [(p["name"], p["containerPort"]) for p in main["ports"]] == [("metrics", port)]
    assert pod["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": "/metrics",
    }
    probes = {
        kind: (main[kind]["httpGet"]["path"], main[kind]["httpGet"]["port"])
        for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes == {
        "startupProbe": ("/healthz", "metrics"),
        "livenessProbe": ("/healthz", "metrics"),
        "readinessProbe": ("/readyz", "metrics"),
    }


def test_the_grace_period_leaves_room_beyond_the_services_own() -> None:
    grace = deployment()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= int(config()["SHUTDOWN_GRACE_SECONDS"]) + 10


def test_the_pod_runs_non_root_without_a_fixed_uid() -> None:
    pod = deployment()["spec"]["template"]["spec"]
    main = container(deployment())
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert main["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
    }
    # OpenShift's restricted SCC assigns the uid and fsGroup; a fixed one is refused.
    text = "\n".join(path.read_text() for path in resource_files())
    assert not re.search(r"^\s*(runAsUser|runAsGroup|fsGroup):", text, re.MULTILINE)


def test_one_replica_keeps_its_sqlite_ledger_on_the_claim() -> None:
    spec = deployment()["spec"]
    pod = spec["template"]["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    mounts = {m["name"]: m["mountPath"] for m in container(deployment())["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    ledger_dir = str(Path(config()["LEDGER_PATH"]).parent)
    [ledger] = [name for name, path in mounts.items() if path == ledger_dir]
    claim = one(resources(), "PersistentVolumeClaim")["metadata"]["name"]
    assert volumes[ledger]["persistentVolumeClaim"] == {"claimName": claim}
    [tmp] = [name for name, path in mounts.items() if path == "/tmp"]
    assert "emptyDir" in volumes[tmp]


def test_only_the_monitoring_namespace_may_reach_the_metrics_port() -> None:
    """The metrics-from-monitoring component (SPEC 7: nobody else on the network gets in)."""
    policy = one(resources(), "NetworkPolicy")["spec"]
    pod_labels = deployment()["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["policyTypes"] == ["Ingress"]  # any other connection in is refused
    [rule] = policy["ingress"]
    [metrics] = container(deployment())["ports"]
    assert rule["ports"] == [{"port": metrics["name"], "protocol": "TCP"}]
    # Whole namespaces picked by their monitoring labels: no pods of this namespace, no
    # address ranges.
    assert [set(peer) for peer in rule["from"]] == [{"namespaceSelector"}] * len(rule["from"])
    assert [peer["namespaceSelector"] for peer in rule["from"]] == [
        {"matchLabels": {"network.openshift.io/policy-group": "monitoring"}},
        {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
    ]


# --- rendered as `kubectl apply -k` would, with each component -------------------------


@pytest.fixture(scope="module")
def kustomize() -> list[str]:
    command = kustomize_command()
    if command is None:
        pytest.skip("no kubectl with kustomize v4 or newer here to render deploy/")
    return command


@pytest.mark.parametrize(
    "components",
    [(), ("postgres-ledger",), ("kubernetes-fsgroup",), ("metrics-from-monitoring",)],
    ids=str,
)
def test_each_variant_renders_to_valid_resources(
    kustomize: list[str], tmp_path: Path, components: tuple[str, ...]
) -> None:
    rendered = render(kustomize, tmp_path, components)
    assert [p for r in rendered for p in problems(r)] == []
    image = container(one(rendered, "Deployment"))["image"]
    assert image.startswith("registry.example.org/") and image.endswith(":2.0.0")


def test_the_postgres_ledger_runs_several_replicas_without_the_claim(
    kustomize: list[str], tmp_path: Path
) -> None:
    rendered = render(kustomize, tmp_path, ["postgres-ledger"])
    assert sorted(kind_name(r) for r in rendered) == [
        "ConfigMap/s3-events-handler",
        "Deployment/s3-events-handler",
        "Secret/s3-events-handler",
    ]
    spec = one(rendered, "Deployment")["spec"]
    assert spec["replicas"] >= 2
    assert spec["strategy"]["type"] == "RollingUpdate"
    volumes = spec["template"]["spec"]["volumes"]
    assert [v for v in volumes if "persistentVolumeClaim" in v] == []
    assert {v["name"] for v in volumes} == {"ledger", "tmp"}


def test_the_fsgroup_component_hands_the_volume_to_a_group(
    kustomize: list[str], tmp_path: Path
) -> None:
    rendered = render(kustomize, tmp_path, ["kubernetes-fsgroup"])
    pod = one(rendered, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["fsGroup"] == 10001
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_the_network_policy_component_adds_the_policy_and_changes_nothing_else(
    kustomize: list[str], tmp_path: Path
) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "policy").mkdir()
    plain = render(kustomize, tmp_path / "plain")
    with_policy = render(kustomize, tmp_path / "policy", ["metrics-from-monitoring"])
    assert [r for r in with_policy if r["kind"] != "NetworkPolicy"] == plain
    assert kind_name(one(with_policy, "NetworkPolicy")) == "NetworkPolicy/s3-events-handler-metrics"
