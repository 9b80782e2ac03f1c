"""JUnit XML (the standard library's ``xml.etree``) for the runs pytest does not report itself:
chaos experiments and upgrade checks. One ``<testsuite>`` per run; a case that did not hold has a
``<failure>`` whose message is one line and whose text is the evidence.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Case:
    name: str
    classname: str
    seconds: float = 0.0
    failure: str | None = None  # one line: why it did not hold
    text: str = ""  # the evidence (failure text, or system-out when it held)
    skipped: str | None = None
    properties: Mapping[str, str] = field(default_factory=dict)


def suite(name: str, cases: Sequence[Case], properties: Mapping[str, str] | None = None) -> ET.Element:
    failures = sum(1 for c in cases if c.failure is not None)
    skipped = sum(1 for c in cases if c.skipped is not None and c.failure is None)
    root = ET.Element("testsuites", name=name, tests=str(len(cases)), failures=str(failures), errors="0")
    s = ET.SubElement(
        root,
        "testsuite",
        name=name,
        tests=str(len(cases)),
        failures=str(failures),
        errors="0",
        skipped=str(skipped),
        time=f"{sum(c.seconds for c in cases):.3f}",
    )
    if properties:
        props = ET.SubElement(s, "properties")
        for k, v in properties.items():
            ET.SubElement(props, "property", name=k, value=str(v))
    for c in cases:
        tc = ET.SubElement(s, "testcase", classname=c.classname, name=c.name, time=f"{c.seconds:.3f}")
        if c.properties:
            props = ET.SubElement(tc, "properties")
            for k, v in c.properties.items():
                ET.SubElement(props, "property", name=k, value=str(v))
        if c.failure is not None:
            el = ET.SubElement(tc, "failure", message=c.failure)
            el.text = c.text or c.failure
        elif c.skipped is not None:
            ET.SubElement(tc, "skipped", message=c.skipped)
        elif c.text:
            ET.SubElement(tc, "system-out").text = c.text
    return root


def write(path: Path, root: ET.Element) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path
