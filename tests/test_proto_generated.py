"""The committed ``fnrun_nb/_proto`` is exactly what the pinned protoc makes of
``proto/fnrun.proto`` (``make proto`` regenerates it with the same pin)."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from conftest import ROOT

GENERATED = ("fnrun_pb2.py", "fnrun_pb2.pyi")


def _pinned_grpc_tools() -> str:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    match = re.search(r"^GRPC_TOOLS\s*:=\s*grpcio-tools==(\S+)", makefile, re.M)
    assert match, "the Makefile pins grpcio-tools (GRPC_TOOLS := grpcio-tools==X.Y.Z)"
    return match.group(1)


def test_pin_is_the_same_in_makefile_and_test_extra() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert f'"grpcio-tools=={_pinned_grpc_tools()}"' in pyproject


def test_generated_code_matches_a_fresh_generation(tmp_path: Path) -> None:
    pin = _pinned_grpc_tools()
    installed = version("grpcio-tools")
    assert installed == pin, (
        f"grpcio-tools {installed} is installed but {pin} is pinned: "
        "reinstall with `pip install -e '.[test]'`"
    )
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-Iproto",
         f"--python_out={tmp_path}", f"--pyi_out={tmp_path}", "proto/fnrun.proto"],
        cwd=ROOT, check=True, capture_output=True, timeout=60,
    )
    for name in GENERATED:
        fresh = (tmp_path / name).read_text(encoding="utf-8")
        committed = (ROOT / "fnrun_nb" / "_proto" / name).read_text(encoding="utf-8")
        assert committed == fresh, f"fnrun_nb/_proto/{name} is stale: run `make proto`"


def test_protobuf_runtime_lower_bound_matches_generated_code() -> None:
    # The generated module checks the runtime against the protoc that made it
    # (ValidateProtobufRuntimeVersion); the declared dependency must not allow less.
    text = (ROOT / "fnrun_nb" / "_proto" / "fnrun_pb2.py").read_text(encoding="utf-8")
    match = re.search(r"ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,"
                      r"\s*(\d+),\s*(\d+),\s*(\d+),", text)
    assert match, "the generated module validates the runtime version"
    generated_for = ".".join(match.groups())
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    bound = re.search(r'"protobuf>=([\d.]+)"', pyproject)
    assert bound, "pyproject declares a protobuf lower bound"
    want = tuple(int(p) for p in match.groups())
    have = tuple(int(p) for p in bound.group(1).split("."))
    assert have >= want, f"protobuf>={bound.group(1)} allows a runtime older than {generated_for}"
