"""Regenerate the Python stubs in services/common/gen from protos/ (or check they are current).

    python tools/gen_protos.py          # write
    python tools/gen_protos.py --check  # exit 1 if the committed stubs differ from the protos
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
GEN = ROOT / "services" / "common" / "gen"
# protoc writes absolute imports ("from radiology.v1 import x_pb2"); we make them package-qualified
# so the stubs live inside services.common without touching sys.path.
_IMPORT = re.compile(r"^from radiology\.v1 import", re.MULTILINE)


def generate(out: Path) -> None:
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for path in out.rglob("*.py*"):
        text = path.read_text()
        path.write_text(_IMPORT.sub("from services.common.gen.radiology.v1 import", text))
    for pkg in [out, out / "radiology", out / "radiology" / "v1"]:
        (pkg / "__init__.py").write_text("")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true")
    check = parser.parse_args().check
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "gen"
        out.mkdir()
        generate(out)
        if check:
            stale = [
                str(p.relative_to(out))
                for p in out.rglob("*")
                if p.is_file() and not (GEN / p.relative_to(out)).is_file()
                or p.is_file() and not filecmp.cmp(p, GEN / p.relative_to(out), shallow=False)
            ]
            extra = [
                str(p.relative_to(GEN))
                for p in GEN.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and not (out / p.relative_to(GEN)).exists()
            ]
            if stale or extra:
                print("generated stubs are stale; run `make protos`:", *stale, *extra, file=sys.stderr)
                return 1
            return 0
        shutil.rmtree(GEN, ignore_errors=True)
        shutil.copytree(out, GEN)
    return 0


if __name__ == "__main__":
    sys.exit(main())
