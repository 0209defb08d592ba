"""TLS for the broker (AMQPS) and the transport server (FTPS): one client context, one
reading of what went wrong, and one way to say it (docs/operations.md).

The context is made anew for each connection, so a CA file fixed in place is used from
the next connection on, without a restart.
"""

from __future__ import annotations

import ssl


def client_context(ca_file: str = "") -> ssl.SSLContext:
    """Certificates verified against the system's CA store and `ca_file`; host names checked.

    Raises OSError (ssl.SSLError among them) when `ca_file` cannot be read or holds
    no certificate.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


def readable_ca_file(value: str) -> str:
    """A setting's conversion: `value` unchanged when empty or a file of CA certificates.

    A CA file that cannot be used is a deployment to fix, so it stops the start
    rather than the first connection.
    """
    if not value:
        return value
    try:
        client_context(value)
    except ssl.SSLError as error:
        raise ValueError(f"holds no usable PEM certificate ({error.reason or error})") from None
    except OSError as error:
        raise ValueError(f"cannot be read: {error.strerror or error}") from None
    return value


def verification_failure(error: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure behind `error`, however pika wrapped it."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        linked = (current.__cause__, current.__context__, *current.args)
        pending.extend(item for item in linked if isinstance(item, BaseException))
    return None


def unverified(
    subject: str, settings: tuple[str, str], ca_file: str, failure: ssl.SSLCertVerificationError
) -> str:
    """Why `subject`'s certificate was refused, naming the settings that fix it: `settings`
    are the names of its TLS switch and CA file, `ca_file` the CA file's value (none, the
    system's store alone). Without OpenSSL's source location."""
    tls_setting, ca_setting = settings
    trusted = (
        f"{ca_setting}={ca_file!r}" if ca_file else f"no {ca_setting}, the system's CA store only"
    )
    why = failure.verify_message or failure.reason or failure
    return (
        f"the certificate of {subject} cannot be verified ({tls_setting}=true, {trusted}): "
        f"certificate verify failed: {why}"
    )
