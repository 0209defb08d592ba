"""Building and running the image with podman as the shared CONTAINERS notes describe for
these machines: a base image made from Debian's packages (no registry to pull from), chroot
isolation and the host's CA bundle for the build, runc, the host network and lowered
ulimits for the run."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.deploy.manifests import REPO

BASE_IMAGE = "localhost/debian-python:bookworm"
# Each run its own tag: two runs on one machine (a developer and CI) never share an image.
TAG = f"localhost/s3-events-handler:test-{os.getpid()}"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
RUN_FLAGS = [
    "--network",
    "host",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
]


def missing(what: str) -> None:
    """Skip, or fail when the run says the image must be tested (as REQUIRE_BROKER does)."""
    if os.environ.get("REQUIRE_IMAGE") == "1":
        pytest.fail(f"{what} (REQUIRE_IMAGE=1)")
    pytest.skip(f"{what}; set REQUIRE_IMAGE=1 to make this a failure")


def podman_result(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run podman with runc (its default runtime cannot create containers on these
    machines): its exit status and everything it said."""
    return subprocess.run(
        ["podman", "--runtime", "runc", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def podman(*args: str, timeout: float = 60, check: bool = True) -> str:
    """podman's standard output, or an AssertionError with everything it said."""
    done = podman_result(*args, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
    return done.stdout


def has_image(name: str) -> bool:
    return subprocess.run(["podman", "image", "exists", name], check=False).returncode == 0


def ensure_base_image() -> None:
    """Debian bookworm with python3 and venv, made with debootstrap when it is not there yet
    (a minute or two, once per machine)."""
    if has_image(BASE_IMAGE):
        return
    if shutil.which("debootstrap") is None:
        missing(f"no {BASE_IMAGE} and no debootstrap to make it")
    with tempfile.TemporaryDirectory(prefix="debian-python-") as rootfs:
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates",
                "bookworm",
                rootfs,
            ],
            check=True,
            capture_output=True,
            timeout=900,
        )
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            ["podman", "import", "-", BASE_IMAGE],
            stdin=tar.stdout,
            check=True,
            capture_output=True,
            timeout=600,
        )
        assert tar.wait() == 0


def build_image() -> str:
    """The project's Dockerfile built on the Debian base; its tag."""
    if shutil.which("podman") is None:
        missing("podman is not installed (apt-get install -y podman runc debootstrap)")
    ensure_base_image()
    volumes = ["-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"] if CA_BUNDLE.exists() else []
    podman(
        "build",
        "--isolation",
        "chroot",
        *volumes,
        "--build-arg",
        f"BASE_IMAGE={BASE_IMAGE}",
        "-t",
        TAG,
        str(REPO),
        timeout=900,
    )
    return TAG


def remove_image(tag: str) -> None:
    """Drop the run's image, and the untagged build stages older runs left behind (not
    fresh ones, which a build running beside this one may still need): hundreds of MB
    each, which would otherwise fill the machine run after run."""
    podman("rmi", "--force", tag, check=False)
    podman("image", "prune", "--force", "--filter", "until=30m", timeout=120, check=False)
