"""The runc capability wrapper (harness/toolchain/go/runc-capdrop), built and run as dockerd runs it.

The binary is built with its real runc replaced by a recording script and its bounding set read
from a fake status file, so each test sees exactly what would reach runc: the same arguments, and
the OCI config / process spec with the capabilities the host lacks removed (and nothing else).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from harness.toolchain.runc_capdrop import SOURCE_DIR as WRAPPER_SRC

GO = shutil.which("go")
pytestmark = pytest.mark.skipif(GO is None, reason="go is needed to build the wrapper")

LACKING = "Name:\trunc\nCapBnd:\t000001fffeffffff\n"  # no CAP_SYS_RESOURCE (bit 24)
FULL = "Name:\trunc\nCapBnd:\t000001ffffffffff\n"
ALL = ["CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_SYS_RESOURCE", "CAP_NET_ADMIN", "CAP_BPF"]


def build(tmp: Path, status: str, oom_score_adj: int = 0) -> tuple[Path, Path]:
    """The wrapper execing a fake runc that records argv and the files it was handed."""
    status_file = tmp / "status"
    status_file.write_text(status)
    oom_file = tmp / "oom_score_adj"
    oom_file.write_text(f"{oom_score_adj}\n")
    seen = tmp / "seen"
    fake = tmp / "runc"
    fake.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > {seen}.argv\n'
        f'for f in config.json "$BUNDLE/config.json" "$PROCESS"; do [ -f "$f" ] && cp "$f" {seen}.json; done\n'
        "exit 0\n"
    )
    fake.chmod(0o755)
    out = tmp / "runc-capdrop"
    subprocess.run(
        [
            str(GO),
            "build",
            "-o",
            str(out),
            "-ldflags",
            f"-X main.realRunc={fake} -X main.statusFile={status_file} -X main.oomFile={oom_file}",
            ".",
        ],
        cwd=WRAPPER_SRC,
        env={**os.environ, "CGO_ENABLED": "0"},
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out, seen


def privileged_config() -> dict[str, Any]:
    return {
        "ociVersion": "1.0.2-dev",
        "process": {
            "user": {"uid": 0, "gid": 0},
            "args": ["/sbin/init"],
            "capabilities": {s: list(ALL) for s in ("bounding", "effective", "inheritable", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 18446744073709551615, "soft": 1048576}],
        },
        "linux": {"maskedPaths": []},
        "annotations": {"x": "y"},
    }


def run(wrapper: Path, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
    subprocess.run([str(wrapper), *args], check=True, env={**os.environ, **(env or {})}, cwd=cwd, timeout=60)


def test_create_drops_the_missing_capability_from_every_set_and_keeps_the_rest(tmp_path: Path) -> None:
    wrapper, seen = build(tmp_path, LACKING)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps(privileged_config()))
    argv = ["--root", "/run/x", "--log", "/l.json", "--log-format", "json", "create", "--bundle", str(bundle)]
    argv += ["--pid-file", "/p", "cid"]
    run(wrapper, *argv, env={"BUNDLE": str(bundle)})
    assert Path(f"{seen}.argv").read_text().splitlines() == argv  # runc gets the same arguments
    got = json.loads(Path(f"{seen}.json").read_text())
    want = privileged_config()
    for s in want["process"]["capabilities"]:
        want["process"]["capabilities"][s].remove("CAP_SYS_RESOURCE")
    assert got == want  # large rlimits exactly, unknown fields untouched


def test_create_with_bundle_as_equals_flag_and_short_flag(tmp_path: Path) -> None:
    wrapper, _ = build(tmp_path, LACKING)
    for form in (["--bundle={}"], ["-b", "{}"]):
        bundle = tmp_path / f"b{len(form)}"
        bundle.mkdir()
        (bundle / "config.json").write_text(json.dumps(privileged_config()))
        run(wrapper, "create", *[f.format(bundle) for f in form], "cid")
        caps = json.loads((bundle / "config.json").read_text())["process"]["capabilities"]
        assert all("CAP_SYS_RESOURCE" not in v for v in caps.values()), form


def test_exec_process_spec_is_rewritten(tmp_path: Path) -> None:
    wrapper, seen = build(tmp_path, LACKING)
    spec = tmp_path / "process.json"
    spec.write_text(json.dumps({"args": ["sh"], "capabilities": {"bounding": ALL, "effective": ALL}}))
    run(
        wrapper, "--root", "/r", "exec", "--process", str(spec), "--detach", "cid", env={"PROCESS": str(spec)}
    )
    got = json.loads(Path(f"{seen}.json").read_text())
    assert got["capabilities"]["bounding"] == [c for c in ALL if c != "CAP_SYS_RESOURCE"]
    assert got["args"] == ["sh"]


def test_nothing_is_rewritten_with_a_full_bounding_set(tmp_path: Path) -> None:
    wrapper, _ = build(tmp_path, FULL)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    text = json.dumps(privileged_config(), indent=3)
    (bundle / "config.json").write_text(text)
    run(wrapper, "create", "--bundle", str(bundle), "cid")
    assert (bundle / "config.json").read_text() == text  # byte for byte


def test_other_commands_pass_through_untouched(tmp_path: Path) -> None:
    wrapper, seen = build(tmp_path, LACKING)
    cfg = tmp_path / "config.json"
    text = json.dumps(privileged_config())
    cfg.write_text(text)
    # "create" is --root's value here, not the command: a wrong parse would rewrite ./config.json
    run(wrapper, "--root", "create", "state", "cid", cwd=tmp_path)
    assert Path(f"{seen}.argv").read_text().splitlines() == ["--root", "create", "state", "cid"]
    assert cfg.read_text() == text


@pytest.mark.parametrize(
    ("status", "own", "asked", "given"),
    [
        (LACKING, 0, -998, 0),  # kubelet's sandbox score: cannot be lowered without CAP_SYS_RESOURCE
        (LACKING, -500, -998, -500),
        (LACKING, 0, 1000, 1000),  # raising needs no capability: left as asked
        (FULL, 0, -998, -998),  # the host can grant it: untouched
    ],
)
def test_an_oom_score_below_runcs_own_is_raised_only_without_cap_sys_resource(
    tmp_path: Path, status: str, own: int, asked: int, given: int
) -> None:
    wrapper, _ = build(tmp_path, status, oom_score_adj=own)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    cfg = privileged_config()
    cfg["process"]["oomScoreAdj"] = asked
    (bundle / "config.json").write_text(json.dumps(cfg))
    run(wrapper, "create", "--bundle", str(bundle), "cid")
    got = json.loads((bundle / "config.json").read_text())
    assert got["process"]["oomScoreAdj"] == given
    assert got["process"]["rlimits"] == cfg["process"]["rlimits"]


def test_a_sandbox_without_capabilities_still_gets_its_oom_score_raised(tmp_path: Path) -> None:
    wrapper, _ = build(tmp_path, LACKING)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"process": {"args": ["/pause"], "oomScoreAdj": -998}}))
    run(wrapper, "create", "--bundle", str(bundle), "cid")
    assert json.loads((bundle / "config.json").read_text())["process"] == {
        "args": ["/pause"],
        "oomScoreAdj": 0,
    }
