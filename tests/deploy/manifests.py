"""Reading `deploy/` as Kubernetes sees it: its resources, validated offline against the
Kubernetes schemas that kubernetes-validate ships, and its kustomizations rendered."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
# The oldest Kubernetes the manifests promise to apply on (OpenShift 4.12), and the newest
# whose schemas the installed kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.25", kubernetes_validate.latest_version())
KUSTOMIZE_KINDS = {"Kustomization", "Component"}
# The Prometheus Operator's kinds: not in kubernetes-validate's schemas, checked by
# tests/deploy/test_monitoring.py instead.
OPERATOR_KINDS = {"PodMonitor", "PrometheusRule"}
# What `kubectl apply -k` is pointed at: deploy/ itself and today's environments.
ENTRY_POINTS = (".", "overlays/int", "overlays/qas", "overlays/prd")
COMPONENTS = (
    "monitoring",
    "grafana-dashboard",
    "postgres-ledger",
    "kubernetes-fsgroup",
    "metrics-from-monitoring",
    "reconcile",
)

Resource = dict[str, Any]


def documents(path: Path) -> list[Resource]:
    """The non-empty YAML documents in `path`."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def env_file(path: Path) -> dict[str, str]:
    """An env file as kustomize's generators read it: KEY=VALUE lines, `#` comments."""
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value
    return values


def kustomizations() -> list[Path]:
    return sorted(DEPLOY.rglob("kustomization.yaml"))


def kustomization(path: Path) -> Resource:
    [found] = documents(path)
    return found


def _listed(field: str) -> list[Path]:
    files: set[Path] = set()
    for path in kustomizations():
        for entry in kustomization(path).get(field, []):
            listed = (path.parent / entry).resolve()
            if listed.is_file():
                files.add(listed)
    return sorted(files)


def resource_files() -> list[Path]:
    """The files the kustomizations list as resources (patches are not whole resources)."""
    return _listed("resources")


def configuration_files() -> list[Path]:
    """kustomize's own field specs (`configurations:`), not Kubernetes resources."""
    return _listed("configurations")


def patch_files() -> list[Path]:
    files: set[Path] = set()
    for path in kustomizations():
        for patch in kustomization(path).get("patches", []):
            if "path" in patch:
                files.add((path.parent / patch["path"]).resolve())
    return sorted(files)


def generator_files() -> list[Path]:
    """The files the ConfigMap and Secret generators read (env files and data files)."""
    files: set[Path] = set()
    for path in kustomizations():
        found = kustomization(path)
        for generator in found.get("configMapGenerator", []) + found.get("secretGenerator", []):
            for entry in generator.get("envs", []) + generator.get("files", []):
                files.add((path.parent / entry.rpartition("=")[2]).resolve())
    return sorted(files)


def problems(resource: Resource) -> list[str]:
    """Why `resource` is not valid for each Kubernetes version checked; empty when it is.

    Strict schemas: a misspelt or misplaced field is an error, not silently dropped. The
    Prometheus Operator's kinds are not in these schemas: test_monitoring.py checks them.
    """
    if resource.get("kind") in OPERATOR_KINDS:
        return []
    found = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = ".".join(str(part) for part in error.path) or "(top)"
            found.append(f"{kind_name(resource)} on {version}: {where}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            found.append(f"{kind_name(resource)}: {error.message}")
    return found


def kind_name(resource: Resource) -> str:
    return f"{resource.get('kind')}/{resource.get('metadata', {}).get('name')}"


def one(resources: Iterable[Resource], kind: str) -> Resource:
    [found] = [r for r in resources if r["kind"] == kind]
    return found


def kustomize_command() -> list[str] | None:
    """`kubectl kustomize` when the kubectl here bundles a kustomize with components (v4+).

    (The standalone kustomize is in neither Debian's packages nor PyPI.)
    """
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    version = subprocess.run(
        [kubectl, "version", "--client", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    try:
        bundled = json.loads(version.stdout).get("kustomizeVersion", "")
    except json.JSONDecodeError:
        return None
    major = re.match(r"v(\d+)", bundled)
    if major is None or int(major.group(1)) < 4:
        return None
    return [kubectl, "kustomize"]


def checkout(workdir: Path) -> Path:
    """A copy of deploy/ in `workdir`, with a secret.env made from the example beside each
    entry point, as an operator fills them in: what `render` builds. Its path."""
    copy = workdir / "deploy"
    if not copy.exists():
        shutil.copytree(DEPLOY, copy, ignore=shutil.ignore_patterns("secret.env"))
        example = (DEPLOY / "secret.env.example").read_text()
        for entry in ENTRY_POINTS:
            (copy / entry / "secret.env").write_text(example)
    return copy


def build(command: list[str], directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command, str(directory)], capture_output=True, text=True, timeout=60, check=False
    )


def render(
    command: list[str], workdir: Path, entry: str = ".", components: Iterable[str] = ()
) -> list[Resource]:
    """What `kubectl apply -k deploy/ENTRY` sends with `components` turned on as well, as
    uncommenting them under `components:` there would (in a copy in `workdir`)."""
    directory = checkout(workdir) / entry
    path = directory / "kustomization.yaml"
    found = kustomization(path)
    listed = found.setdefault("components", [])
    for name in components:
        relative = os.path.relpath(checkout(workdir) / name, directory)
        if relative not in listed:
            listed.append(relative)
    path.write_text(yaml.safe_dump(found, sort_keys=False))
    built = build(command, directory)
    assert built.returncode == 0, built.stderr
    return [doc for doc in yaml.safe_load_all(built.stdout) if doc]
