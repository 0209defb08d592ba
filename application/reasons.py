"""The one place that turns a failure into the text that leaves the service (dead letters'
`x-error`, log lines, the commands' reports): one line, of bounded length, that UTF-8 can
carry, with known secrets masked, since servers and libraries echo what they were sent and
write messages over several lines.
"""

from __future__ import annotations

from collections.abc import Iterable

MASK = "***"
# A header, not a dump: a reason longer than this is cut, with an ellipsis.
MAX_REASON_LENGTH = 500


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


def one_line(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` on one line, white space folded, at most `MAX_REASON_LENGTH` characters, with
    each of `secrets` masked."""
    flat = " ".join(text.split()).encode("utf-8", "backslashreplace").decode("utf-8")
    flat = Redactor(secrets).redact(flat)
    return flat if len(flat) <= MAX_REASON_LENGTH else flat[: MAX_REASON_LENGTH - 1] + "…"


def reason_of(error: BaseException, secrets: Iterable[str | None] = ()) -> str:
    """`one_line` of an error, its type first: `ServiceUnavailable: MediaHaven answered 503`."""
    return one_line(f"{type(error).__name__}: {error}", secrets)
