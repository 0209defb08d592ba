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

Resource = dict[str, Any]


def documents(path: Path) -> list[Resource]:
    """The non-empty YAML documents in `path`."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kustomizations() -> list[Path]:
    return sorted(DEPLOY.rglob("kustomization.yaml"))


def resource_files() -> list[Path]:
    """The files the kustomizations list as resources (patches are not whole resources)."""
    files: set[Path] = set()
    for kustomization in kustomizations():
        for entry in documents(kustomization)[0].get("resources", []):
            path = (kustomization.parent / entry).resolve()
            if path.is_file():
                files.add(path)
    return sorted(files)


def patch_files() -> list[Path]:
    files: set[Path] = set()
    for kustomization in kustomizations():
        for patch in documents(kustomization)[0].get("patches", []):
            if "path" in patch:
                files.add((kustomization.parent / patch["path"]).resolve())
    return sorted(files)


def problems(resource: Resource) -> list[str]:
    """Why `resource` is not valid for each Kubernetes version checked; empty when it is.

    Strict schemas: a misspelt or misplaced field is an error, not silently dropped.
    """
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
    """`kubectl kustomize` when the kubectl here bundles a kustomize with components (v4+)."""
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


def render(command: list[str], workdir: Path, components: Iterable[str] = ()) -> list[Resource]:
    """What `kubectl apply -k deploy/` would send with `components` turned on.

    A kustomization of its own in `workdir` (outside the repository) takes `deploy/` as
    its base and adds the components, as uncommenting them in deploy/ would.
    """
    here = Path(os.path.relpath(DEPLOY, workdir))
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [str(here)],
        "components": [str(here / name) for name in components],
    }
    (workdir / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    built = subprocess.run(
        [*command, str(workdir)], capture_output=True, text=True, timeout=60, check=False
    )
    assert built.returncode == 0, built.stderr
    return [doc for doc in yaml.safe_load_all(built.stdout) if doc]
