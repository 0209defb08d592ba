"""MediaHaven's sidecar XML: the one place that knows its markup.

The layout, titles and descriptions are those of the service in use today, so
MediaHaven sees the same sidecars from the new service.
"""

from __future__ import annotations

from lxml import etree

from s3_events_handler.domain.model import Sidecar

_TITLES = {False: "Essence: pid: {pid}", True: "Collateral: pid: {pid}"}
# Today's service says "Subtitles" for every collateral, whatever its type.
_DESCRIPTIONS = {
    False: "Main fragment for essence:\n    - filename: {key}\n    - CP: {cp}\n    ",
    True: "Subtitles for essence:\n    - filename: {key}\n    - CP: {cp}\n    ",
}


def _add(parent: etree._Element, tag: str, text: str) -> etree._Element:
    element = etree.SubElement(parent, tag)
    element.text = text
    return element


def _serialise(root: etree._Element) -> bytes:
    return etree.tostring(root, pretty_print=True, encoding="UTF-8", xml_declaration=True)


def _relations(properties: etree._Element, pid: str) -> None:
    relations = etree.SubElement(properties, "dc_relations")
    _add(relations, "is_verwant_aan", pid)


def render(sidecar: Sidecar) -> bytes:
    """The sidecar as UTF-8 bytes, with declaration, pretty-printed."""
    obj = sidecar.object
    collateral = sidecar.is_collateral
    root = etree.Element("MediaHAVEN_external_metadata")
    _add(root, "title", _TITLES[collateral].format(pid=sidecar.pid))
    _add(root, "description", _DESCRIPTIONS[collateral].format(key=obj.key, cp=sidecar.cp_name))
    properties = etree.SubElement(root, "MDProperties")
    _add(properties, "CP", sidecar.cp_name)
    _add(properties, "CP_id", sidecar.or_id)
    _add(properties, "sp_name", "s3")
    _add(properties, "PID", sidecar.pid)
    _add(properties, "s3_domain", obj.domain)
    _add(properties, "s3_bucket", obj.bucket)
    _add(properties, "s3_object_key", obj.key)
    _add(properties, "s3_object_owner", obj.owner)
    if sidecar.media_id is not None:
        _add(properties, "dc_identifier_localid", sidecar.media_id)
    _add(properties, "object_level", "file")
    _add(properties, "object_use", sidecar.object_use)
    _add(properties, "ie_type", "n/a")
    localids = etree.SubElement(properties, "dc_identifier_localids")
    _add(localids, "Bestandsnaam", obj.key)
    if obj.md5 is not None:
        _add(properties, "md5", obj.md5)
    if sidecar.related_pid is not None:
        _relations(properties, sidecar.related_pid)
    return _serialise(root)


def render_relation(related_pid: str) -> bytes:
    """The metadata update that links a record to `related_pid`."""
    root = etree.Element("MediaHAVEN_external_metadata")
    _relations(etree.SubElement(root, "MDProperties"), related_pid)
    return _serialise(root)
