"""Masking known secrets in text that leaves the service: messages, log lines, dead letters.

Servers and libraries echo what they were sent (a password in an FTP reply, a token
in an error body), so every adapter passes such text through one `Redactor` first.
"""

from __future__ import annotations

from collections.abc import Iterable

MASK = "***"


class Redactor:
    """Replaces each of its secrets with `MASK`.

    The longest secret goes first, so a secret that contains another is masked whole
    rather than leaving its remainder. Secrets shorter than `shortest` are left alone
    (an empty one would match everywhere).
    """

    __slots__ = ("_secrets",)

    def __init__(self, secrets: Iterable[str | None], *, shortest: int = 1) -> None:
        known = {secret for secret in secrets if secret and len(secret) >= max(shortest, 1)}
        self._secrets = tuple(sorted(known, key=lambda secret: (-len(secret), secret)))

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with every non-empty secret in `secrets` masked; for secrets that change."""
    return Redactor(secrets).redact(text)


__all__ = ["MASK", "Redactor", "redact"]
