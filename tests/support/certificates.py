"""Certificates for the TLS tests, made on the spot by trustme: no key or certificate is
kept in the repository, and each run has its own certificate authorities."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme

# What the test servers are reached by: the service connects to 127.0.0.1.
LOOPBACK_NAMES = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class TlsFiles:
    """A certificate authority's certificate and a server certificate it signed, as PEM files.

    `ca_file` is what a client is told to trust (RABBIT_MQ_CA_FILE, MEDIAHAVEN_FTP_CA_FILE);
    `server_pem` holds the server's private key and certificate chain, for the test servers.
    """

    ca_file: Path
    server_pem: Path


def make_tls_files(directory: Path, *, names: tuple[str, ...] = LOOPBACK_NAMES) -> TlsFiles:
    """A new CA in `directory`, and a server certificate for `names` signed by it."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="s3-events-handler tests")
    server = ca.issue_cert(*names)
    files = TlsFiles(ca_file=directory / "ca.pem", server_pem=directory / "server.pem")
    ca.cert_pem.write_to_path(str(files.ca_file))
    server.private_key_and_cert_chain_pem.write_to_path(str(files.server_pem))
    return files
