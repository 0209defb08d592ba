"""TLS for the broker (AMQPS) and the transport server (FTPS): one client context, one
reading of what went wrong.

The context trusts the system's CA store plus an optional CA file, and checks the
server's host name. It is made anew for each connection, so a CA file fixed in place
(a ConfigMap that was updated) is used from the next connection on, without a restart.
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


def describe_failure(failure: ssl.SSLCertVerificationError) -> str:
    """`certificate verify failed: <why>`, without OpenSSL's source location."""
    return f"certificate verify failed: {failure.verify_message or failure.reason or failure}"
