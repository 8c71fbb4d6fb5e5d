"""The protos are the internal API: generated stubs must match them and they must pass buf lint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUF = ROOT / "tools" / "buf" / "node_modules" / ".bin" / "buf"


def test_generated_stubs_are_current() -> None:
    result = subprocess.run(
        [sys.executable, "tools/gen_protos.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_protos_pass_buf_lint() -> None:
    if not BUF.exists():
        pytest.skip("buf not installed: `make buf` installs it (make test does)")
    result = subprocess.run([str(BUF), "lint"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_message_and_field_is_documented() -> None:
    """Other teams read the .proto files as the API reference: nothing may be left unexplained."""
    import grpc_tools
    from google.protobuf import descriptor_pb2
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    out = ROOT / "var" / "descriptor-test.pb"
    out.parent.mkdir(exist_ok=True)
    files = sorted(str(p.relative_to(ROOT / "protos")) for p in (ROOT / "protos").rglob("*.proto"))
    assert protoc.main(["protoc", f"-I{ROOT / 'protos'}", f"-I{include}", "--include_source_info",
                        f"--descriptor_set_out={out}", *files]) == 0
    fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    undocumented = []
    for f in fds.file:
        commented = {tuple(loc.path) for loc in f.source_code_info.location
                     if loc.leading_comments.strip() or loc.trailing_comments.strip()}
        for i, service in enumerate(f.service):
            for j, method in enumerate(service.method):
                if (6, i, 2, j) not in commented:
                    undocumented.append(f"{f.name}: rpc {service.name}.{method.name}")
        for i, message in enumerate(f.message_type):
            for j, fld in enumerate(message.field):
                if (4, i, 2, j) not in commented:
                    undocumented.append(f"{f.name}: {message.name}.{fld.name}")
    assert not undocumented, "undocumented:\n" + "\n".join(undocumented)
