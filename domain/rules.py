"""What a value from outside must be before the service builds on it: an OR-id, an md5, a PID,
a folder or file name on the transport server, an object's extension, text for XML."""

from __future__ import annotations

import re

from s3_events_handler.domain.errors import BadInput

# MediaHaven pairs a file on the transport server with the sidecar of the same base name.
SIDECAR_EXTENSION = ".xml"
PID_PATTERN = re.compile(r"[a-z0-9]{10}")
MD5_PATTERN = re.compile(r"[0-9a-fA-F]{32}")
NOID_LENGTH = 7
# Longest path segment, in UTF-8 bytes: a collateral's temporary sidecar name
# `.{essence_pid}_{type}.xml.{token}.part` (8 hex digits of token: 220 bytes at most)
# then stays within a file name's 255 bytes, and its name (the transfer request's
# message_id) within an AMQP short string's 255.
MAX_SEGMENT_BYTES = 100
# Longest object extension a transfer request's destination takes, in UTF-8 bytes, its dot
# included: real ones are a few (.mxf, .srt, .stl), and this keeps `{name}{ext}` a file name.
MAX_EXTENSION_BYTES = 32

# Characters XML 1.0 cannot carry: C0 controls except tab, newline and carriage return,
# lone surrogates and the two non-characters U+FFFE/U+FFFF.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# What no file or folder name on the transport server may hold: a control character, / or \.
_NOT_IN_A_NAME = re.compile("[\x00-\x1f\x7f-\x9f/\\\\]")


def normalise_or_id(raw: str) -> str:
    """`or-RF5KF25` -> `OR-rf5kf25`: the form the Organisations API and MediaHaven know."""
    parts = raw.split("-")
    if len(parts) != 2 or not parts[0] or len(parts[1]) != NOID_LENGTH:
        raise BadInput(f"not an OR-id (PREFIX-noid, noid of {NOID_LENGTH}): {raw!r}")
    prefix, noid = parts
    if _NOT_IN_A_NAME.search(raw):
        raise BadInput(f"not an OR-id: {raw!r}")
    return f"{prefix.upper()}-{noid.lower()}"


def valid_md5(raw: str | None) -> str | None:
    """An md5 is trusted only as 32 hex digits, kept as given."""
    if raw is not None and MD5_PATTERN.fullmatch(raw):
        return raw
    return None


def is_valid_pid(value: str) -> bool:
    return PID_PATTERN.fullmatch(value) is not None


def require_path_segment(value: str, what: str) -> str:
    """Values that become part of an FTP path must stay one segment below their folder."""
    if not value or value in (".", "..") or _NOT_IN_A_NAME.search(value):
        raise BadInput(f"{what} cannot be used as a folder or file name: {value!r}")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_SEGMENT_BYTES:
        raise BadInput(f"{what} is longer than {MAX_SEGMENT_BYTES} bytes: {value[:40]!r}…")
    return value


def require_transferable_extension(extension: str) -> str:
    """The object's extension ends the transfer request's destination, `{name}{ext}`, beside
    its sidecar `{name}.xml` (contract §3.4): it must not be the sidecar's, nor more than a file
    name's ending."""
    if extension.lower() == SIDECAR_EXTENSION:
        raise BadInput(
            f"the object's extension {extension} is the sidecar's: "
            "MediaHaven would take the file for its own sidecar"
        )
    if _NOT_IN_A_NAME.search(extension):
        raise BadInput(
            f"the object's extension {extension[:40]!r} holds a control character, / or \\: "
            "it cannot end a file name on the transport server"
        )
    if len(extension.encode("utf-8", "surrogatepass")) > MAX_EXTENSION_BYTES:
        raise BadInput(
            f"the object's extension is longer than {MAX_EXTENSION_BYTES} bytes: "
            f"{extension[:40]!r}…"
        )
    return extension


def require_xml_text(value: str, what: str) -> str:
    if _NOT_XML.search(value):
        raise BadInput(f"{what} holds a character XML cannot carry: {value!r}")
    return value
