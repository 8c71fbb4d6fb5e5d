"""The protos are the internal API: generated stubs must match them and they must pass buf lint."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

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


# Field numbers in google/protobuf/descriptor.proto: source_code_info locates an element by the path
# of these numbers (and indexes) leading to it from the file, e.g. message 3, field 1 = (4, 3, 2, 1).
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE = 4, 5, 6
_MESSAGE_FIELD, _MESSAGE_NESTED, _MESSAGE_ENUM, _MESSAGE_ONEOF = 2, 3, 4, 8
_ENUM_VALUE = 2
_SERVICE_METHOD = 2

Element = tuple[tuple[int, ...], str, str]  # (path, kind, name)


def _enum_elements(
    path: tuple[int, ...], enum: descriptor_pb2.EnumDescriptorProto, name: str
) -> Iterator[Element]:
    yield path, "enum", name
    for k, value in enumerate(enum.value):
        yield (*path, _ENUM_VALUE, k), "enum value", f"{name}.{value.name}"


def _message_elements(
    path: tuple[int, ...], message: descriptor_pb2.DescriptorProto, name: str
) -> Iterator[Element]:
    yield path, "message", name
    for k, field in enumerate(message.field):
        yield (*path, _MESSAGE_FIELD, k), "field", f"{name}.{field.name}"
    for k, oneof in enumerate(message.oneof_decl):
        yield (*path, _MESSAGE_ONEOF, k), "oneof", f"{name}.{oneof.name}"
    for k, nested in enumerate(message.nested_type):
        if not nested.options.map_entry:  # synthesized for a map<,> field: not in the source
            yield from _message_elements((*path, _MESSAGE_NESTED, k), nested, f"{name}.{nested.name}")
    for k, enum in enumerate(message.enum_type):
        yield from _enum_elements((*path, _MESSAGE_ENUM, k), enum, f"{name}.{enum.name}")


def _elements(file: descriptor_pb2.FileDescriptorProto) -> Iterator[Element]:
    """Every service, RPC, message, field, oneof, enum and enum value of a file, nested ones too."""
    for i, service in enumerate(file.service):
        yield (_FILE_SERVICE, i), "service", service.name
        for j, method in enumerate(service.method):
            yield (_FILE_SERVICE, i, _SERVICE_METHOD, j), "rpc", f"{service.name}.{method.name}"
    for i, message in enumerate(file.message_type):
        yield from _message_elements((_FILE_MESSAGE, i), message, message.name)
    for i, enum in enumerate(file.enum_type):
        yield from _enum_elements((_FILE_ENUM, i), enum, enum.name)


def _undocumented(fds: descriptor_pb2.FileDescriptorSet) -> list[str]:
    """Every element without a leading comment (the comment on the lines right above it)."""
    missing = []
    for file in fds.file:
        locations = file.source_code_info.location
        documented = {tuple(loc.path) for loc in locations if loc.leading_comments.strip()}
        missing += [f"{file.name}: {kind} {name}"
                    for path, kind, name in _elements(file) if path not in documented]
    return missing


def _descriptors(protos: Path) -> descriptor_pb2.FileDescriptorSet:
    """The .proto files under `protos`, compiled with their comments (source_code_info)."""
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    files = sorted(str(p.relative_to(protos)) for p in protos.rglob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "descriptors.pb"
        assert protoc.main(["protoc", f"-I{protos}", f"-I{include}", "--include_source_info",
                            f"--descriptor_set_out={out}", *files]) == 0
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def test_every_message_and_field_is_documented() -> None:
    """Other teams read the .proto files as the API reference: nothing may be left unexplained."""
    undocumented = _undocumented(_descriptors(ROOT / "protos"))
    assert not undocumented, "undocumented:\n" + "\n".join(undocumented)


def test_documentation_check_finds_each_kind_of_element(tmp_path: Path) -> None:
    """The check above would notice any undocumented element, including nested ones."""
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "x.proto").write_text(
        '''syntax = "proto3";
package x;
service S { rpc Call(M) returns (M); }
message M {
  message Inner { int32 a = 1; }
  enum Kind { KIND_UNSPECIFIED = 0; }
  oneof part { int32 b = 1; }
  map<string, int32> c = 2;
}
enum E { E_UNSPECIFIED = 0; }
// Documented.
enum D {
  // Documented.
  D_UNSPECIFIED = 0;
  D_OTHER = 1;  // A trailing comment is not enough.
}
''')
    assert _undocumented(_descriptors(tmp_path)) == [
        "x/x.proto: service S", "x/x.proto: rpc S.Call", "x/x.proto: message M",
        "x/x.proto: field M.b", "x/x.proto: field M.c", "x/x.proto: oneof M.part",
        "x/x.proto: message M.Inner", "x/x.proto: field M.Inner.a", "x/x.proto: enum M.Kind",
        "x/x.proto: enum value M.Kind.KIND_UNSPECIFIED", "x/x.proto: enum E",
        "x/x.proto: enum value E.E_UNSPECIFIED", "x/x.proto: enum value D.D_OTHER",
    ]
