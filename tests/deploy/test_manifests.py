"""deploy/: valid Kubernetes, in step with .env.example, safe to apply, and saying what contract §7
asks of a deployment (probes, grace period, a non-root pod OpenShift admits, the ledger's
volume, a changed setting rolling the pods, today's environments as overlays)."""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path, PurePosixPath

import pytest

from tests.deploy.manifests import (
    COMPONENTS,
    DEPLOY,
    ENTRY_POINTS,
    KUSTOMIZE_KINDS,
    REPO,
    Resource,
    build,
    checkout,
    configuration_files,
    documents,
    env_file,
    generator_files,
    kind_name,
    kustomization,
    one,
    patch_files,
    problems,
    render,
    resource_files,
)

# What must never sit in the ConfigMap: passwords, the client secret, and the ledger's DSN,
# which may carry a password.
SECRET_NAME = re.compile(r"PASSWD|PASSWORD|SECRET|TOKEN|_DSN$")
SETTINGS = DEPLOY / "base" / "settings.env"
SECRET_EXAMPLE = DEPLOY / "secret.env.example"
# Today's environments: the overlay, its APP_ENVIRONMENT, and the name suffix and labels
# today's OpenShift template gives them.
ENVIRONMENTS = {"int": "int", "qas": "qas", "prd": "production"}


def env_example_variables() -> set[str]:
    """Every variable .env.example names, set or shown commented out with its default."""
    text = (REPO / ".env.example").read_text()
    return set(re.findall(r"^#?[ \t]*([A-Z][A-Z0-9_]*)=", text, re.MULTILINE))


def resources() -> list[Resource]:
    return [doc for path in resource_files() for doc in documents(path)]


def deployment() -> Resource:
    return one(resources(), "Deployment")


def config() -> dict[str, str]:
    return env_file(SETTINGS)


def container(deployment: Resource) -> Resource:
    [only] = deployment["spec"]["template"]["spec"]["containers"]
    found: Resource = only
    return found


def settings_of(rendered: list[Resource]) -> dict[str, str]:
    """The data of the rendered ConfigMap the container takes its environment from."""
    [name] = [
        source["configMapRef"]["name"]
        for source in container(one(rendered, "Deployment"))["envFrom"]
        if "configMapRef" in source
    ]
    [found] = [r for r in rendered if r["kind"] == "ConfigMap" and r["metadata"]["name"] == name]
    data: dict[str, str] = found["data"]
    return data


def pod_labels(rendered: list[Resource]) -> dict[str, str]:
    labels: dict[str, str] = one(rendered, "Deployment")["spec"]["template"]["metadata"]["labels"]
    return labels


def selects(match_labels: dict[str, str], labels: dict[str, str]) -> bool:
    return match_labels.items() <= labels.items()


# --- valid Kubernetes ---------------------------------------------------------------


def test_every_yaml_file_in_deploy_is_used() -> None:
    """As a resource, a patch, a generator's input or kustomize's own configuration; so none
    escapes the validation below."""
    known = {
        *resource_files(),
        *patch_files(),
        *generator_files(),
        *configuration_files(),
    }
    for path in DEPLOY.rglob("*.y*ml"):
        kinds = {doc.get("kind") for doc in documents(path)}
        assert path.resolve() in known or kinds <= KUSTOMIZE_KINDS, f"{path} is used nowhere"


def test_the_resources_are_valid_against_the_kubernetes_schemas() -> None:
    found = resources()
    assert {r["kind"] for r in found} == {
        "PersistentVolumeClaim",
        "Deployment",
        "CronJob",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "PodMonitor",
        "PrometheusRule",
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


def test_the_settings_hold_every_setting_of_env_example_but_the_secrets() -> None:
    variables = env_example_variables()
    secrets = {v for v in variables if SECRET_NAME.search(v)}
    keys = set(config())
    assert sorted(variables - secrets - keys) == [], "in .env.example, missing from settings.env"
    assert sorted(keys & secrets) == [], "secrets in settings.env"
    assert sorted(keys - variables) == [], "not in .env.example"
    for overlay in ENVIRONMENTS:
        extra = set(env_file(DEPLOY / "overlays" / overlay / "settings.env")) - keys
        assert extra == set(), f"overlays/{overlay}/settings.env sets what the base does not"


def test_the_secret_example_holds_exactly_the_secrets_and_no_values() -> None:
    values = env_file(SECRET_EXAMPLE)
    assert set(values) == {v for v in env_example_variables() if SECRET_NAME.search(v)}
    # Left empty, the service refuses to start naming them; a placeholder would be used.
    assert set(values.values()) == {""}


# --- safe to apply ----------------------------------------------------------------------


def test_no_committed_file_holds_a_secret_or_a_placeholder() -> None:
    for path in DEPLOY.rglob("*"):
        if path.is_file() and path.suffix != ".md":
            assert "REPLACE-ME" not in path.read_text(), path
    assert "Secret" not in {r["kind"] for r in resources()}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_each_entry_point_makes_its_secret_from_a_secret_env_git_ignores(entry: str) -> None:
    found = kustomization(DEPLOY / entry / "kustomization.yaml")
    assert found["secretGenerator"] == [{"name": "s3-events-handler", "envs": ["secret.env"]}]
    secret_env = (DEPLOY / entry / "secret.env").relative_to(REPO)
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", "--quiet", str(secret_env)], cwd=REPO, check=False
    )
    assert ignored.returncode == 0, f"git would commit {secret_env}"


def test_the_container_takes_its_environment_from_the_settings_and_the_secret() -> None:
    sources = container(deployment())["envFrom"]
    names = {(kind, source[kind]["name"]) for source in sources for kind in source}
    assert names == {("configMapRef", "s3-events-handler"), ("secretRef", "s3-events-handler")}
    generated = kustomization(DEPLOY / "base" / "kustomization.yaml")["configMapGenerator"]
    assert {"name": "s3-events-handler", "envs": ["settings.env"]} in generated


def test_the_destination_table_is_mounted_where_destination_config_points() -> None:
    path = PurePosixPath(config()["DESTINATION_CONFIG"])
    mounts = {m["mountPath"]: m for m in container(deployment())["volumeMounts"]}
    mount = mounts[str(path.parent)]
    assert mount.get("readOnly") is True
    volumes = {v["name"]: v for v in deployment()["spec"]["template"]["spec"]["volumes"]}
    name = volumes[mount["name"]]["configMap"]["name"]
    generated = kustomization(DEPLOY / "base" / "kustomization.yaml")["configMapGenerator"]
    assert {"name": name, "files": [path.name]} in generated
    # The image's copy and the mounted one are the same table.
    mounted = (DEPLOY / "base" / path.name).read_text()
    assert mounted == (REPO / "destination_config.yml").read_text()


# --- what contract §7 asks of the deployment --------------------------------------------------


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
    """The metrics-from-monitoring component (contract §7: nobody else on the network gets in)."""
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


VARIANTS = [
    pytest.param(entry, components, id=f"{entry}+{'+'.join(components)}" if components else entry)
    for entry, components in [
        *((entry, ()) for entry in ENTRY_POINTS),
        *((".", (name,)) for name in COMPONENTS),
        ("overlays/prd", ("postgres-ledger",)),
    ]
]


@pytest.mark.parametrize(("entry", "components"), VARIANTS)
def test_each_variant_renders_to_valid_resources(
    kustomize: list[str], tmp_path: Path, entry: str, components: tuple[str, ...]
) -> None:
    rendered = render(kustomize, tmp_path, entry, components)
    assert [p for r in rendered for p in problems(r)] == []
    image = container(one(rendered, "Deployment"))["image"]
    assert image.startswith("registry.example.org/") and image.endswith(":2.0.0")
    for resource in rendered:
        assert "REPLACE-ME" not in str(resource), kind_name(resource)


def test_without_a_secret_env_nothing_is_rendered(kustomize: list[str], tmp_path: Path) -> None:
    """No file, no apply: a real Secret is never overwritten by placeholders."""
    for entry in ENTRY_POINTS:
        (checkout(tmp_path) / entry / "secret.env").unlink()
        built = build(kustomize, checkout(tmp_path) / entry)
        assert built.returncode != 0 and built.stdout == ""
        assert "secret.env" in built.stderr


def test_a_changed_setting_or_table_rolls_the_pods(kustomize: list[str], tmp_path: Path) -> None:
    """The ConfigMaps' names carry a hash of their data, and the Deployment names them."""

    def pod_sources(workdir: Path) -> tuple[str, str]:
        pod = one(render(kustomize, workdir), "Deployment")["spec"]["template"]["spec"]
        [settings] = [s["configMapRef"]["name"] for s in container_of(pod) if "configMapRef" in s]
        [table] = [v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v]
        return settings, table

    def container_of(pod: Resource) -> list[Resource]:
        sources: list[Resource] = pod["containers"][0]["envFrom"]
        return sources

    before = pod_sources(tmp_path / "before")
    changed = checkout(tmp_path / "setting")
    (changed / "base" / "settings.env").write_text(
        (changed / "base" / "settings.env").read_text().replace("CONCURRENCY=16", "CONCURRENCY=8")
    )
    after_setting = pod_sources(tmp_path / "setting")
    changed = checkout(tmp_path / "table")
    table = changed / "base" / "destination_config.yml"
    table.write_text(table.read_text().replace("TAPE-SHARE-EVENTS", "DISK-SHARE-EVENTS"))
    after_table = pod_sources(tmp_path / "table")
    assert after_setting[0] != before[0] and after_setting[1] == before[1]
    assert after_table[1] != before[1] and after_table[0] == before[0]


@pytest.mark.parametrize("overlay", ENVIRONMENTS)
def test_each_environment_is_named_and_labelled_as_today(
    kustomize: list[str], tmp_path: Path, overlay: str
) -> None:
    rendered = render(kustomize, tmp_path, f"overlays/{overlay}")
    labels = {
        "app.kubernetes.io/name": "s3-events-handler",
        "app.kubernetes.io/instance": f"s3-events-handler-{overlay}",
        "app.kubernetes.io/component": f"s3-events-handler-{overlay}",
        "app.kubernetes.io/part-of": "s3-events-handler",
        "env": overlay,
    }
    for resource in rendered:
        # s3-events-handler[-what]-ENV, then a generated object's hash.
        name = resource["metadata"]["name"]
        assert re.fullmatch(rf"s3-events-handler(-[a-z]+)?-{overlay}(-[a-z0-9]{{10}})?", name)
        assert selects(labels, resource["metadata"]["labels"]), kind_name(resource)
    assert selects(labels, pod_labels(rendered))
    assert settings_of(rendered)["APP_ENVIRONMENT"] == ENVIRONMENTS[overlay]
    # Three environments may share a namespace: each Deployment picks its own pods only.
    selector = one(rendered, "Deployment")["spec"]["selector"]["matchLabels"]
    assert selector["app.kubernetes.io/instance"] == f"s3-events-handler-{overlay}"


@pytest.mark.parametrize("entry", [".", "overlays/prd"])
def test_the_postgres_ledger_runs_several_replicas_and_nothing_can_hold_a_sqlite_ledger(
    kustomize: list[str], tmp_path: Path, entry: str
) -> None:
    rendered = render(kustomize, tmp_path, entry, ["postgres-ledger"])
    assert "PersistentVolumeClaim" not in {r["kind"] for r in rendered}
    spec = one(rendered, "Deployment")["spec"]
    pod = spec["template"]["spec"]
    main = container(one(rendered, "Deployment"))
    assert spec["replicas"] >= 2
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    # Written only where nothing is kept: /tmp, an emptyDir; the rest is read-only.
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    writable = {m["mountPath"] for m in main["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/tmp"}
    assert [v for v in pod["volumes"] if "persistentVolumeClaim" in v] == []
    ledger_path = PurePosixPath(settings_of(rendered)["LEDGER_PATH"])
    mounted = {PurePosixPath(m["mountPath"]) for m in main["volumeMounts"]}
    assert not any(ledger_path.is_relative_to(path) for path in mounted), ledger_path
    # A drain takes one pod at a time, and the pods spread over nodes, each for its own.
    budget = one(rendered, "PodDisruptionBudget")["spec"]
    assert budget["minAvailable"] == 1
    assert budget["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
    spread = pod["topologySpreadConstraints"]
    assert "kubernetes.io/hostname" in {c["topologyKey"] for c in spread}
    for constraint in spread:
        assert constraint["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]


def test_the_fsgroup_component_hands_the_volume_to_a_group(
    kustomize: list[str], tmp_path: Path
) -> None:
    rendered = render(kustomize, tmp_path, ".", ["kubernetes-fsgroup"])
    pod = one(rendered, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["fsGroup"] == 10001
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_the_network_policy_component_adds_the_policy_and_changes_nothing_else(
    kustomize: list[str], tmp_path: Path
) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "policy").mkdir()
    plain = render(kustomize, tmp_path / "plain", ".", ())
    with_policy = render(kustomize, tmp_path / "policy", ".", ("metrics-from-monitoring",))
    assert [r for r in with_policy if r["kind"] != "NetworkPolicy"] == plain
    assert kind_name(one(with_policy, "NetworkPolicy")) == "NetworkPolicy/s3-events-handler-metrics"


def test_reconcile_is_off_by_default_and_its_component_adds_only_the_cronjob(
    kustomize: list[str], tmp_path: Path
) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "reconcile").mkdir()
    plain = render(kustomize, tmp_path / "plain", ".", ())
    with_it = render(kustomize, tmp_path / "reconcile", ".", ("reconcile",))
    assert "CronJob" not in {r["kind"] for r in plain}
    added = [r for r in with_it if r not in plain]
    assert sorted(r["kind"] for r in added) == ["ConfigMap", "CronJob"]
    cronjob = one(with_it, "CronJob")["spec"]
    assert cronjob["concurrencyPolicy"] == "Forbid"
    job = cronjob["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0  # something missing (exit 1) is reported, not run again
    pod = job["template"]["spec"]
    [main] = pod["containers"]
    assert main["args"][:3] == ["reconcile", "--bucket", "mam-highresvideo"]
    assert "--enqueue" not in main["args"]  # it reports unless told otherwise
    assert main["image"] == "registry.example.org/meemoo/s3-events-handler-reconcile:2.0.0"
    sources = {source[kind]["name"] for source in main["envFrom"] for kind in source}
    settings = one(plain, "Deployment")["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    assert {source[kind]["name"] for source in settings for kind in source} < sources
    assert "s3-events-handler-s3" in sources  # made by hand: nothing here overwrites it
    assert "Secret" not in {r["kind"] for r in added}
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
