#!/usr/bin/env python
"""Rewrite mlagents-envs 1.1.0's generated protobuf modules so they load on protobuf 4 (upb, compiled).

mlagents-envs ships `_pb2.py` files from protoc 3.x, which build descriptors by hand
(`_descriptor.FieldDescriptor(...)`); protobuf 4+ refuses that ("Descriptors cannot be created directly"),
so ML-Agents pins protobuf 3.20, and on CPython 3.11 3.20 has no compiled wheel: every gRPC message to and
from a Unity player is then parsed in pure Python (~9x slower, see bench/results.md).

Each module carries its whole .proto as a serialized FileDescriptorProto (`serialized_pb=b'...'`). This
script reads it from the source (no import: the old module cannot be imported on protobuf 4) and writes
the module in protoc's builder format, which defines the same messages from the same descriptor. Run by
`make` right after mlagents-envs is installed; idempotent.

    .venv/bin/python scripts/upgrade_mlagents_protos.py [--check]
"""
from __future__ import annotations

import argparse
import ast
import importlib.util
import sys
from pathlib import Path

MARK = "# Rewritten by scripts/upgrade_mlagents_protos.py"


def package_dir() -> Path:
    spec = importlib.util.find_spec("mlagents_envs")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("mlagents_envs is not installed in this environment")
    return Path(list(spec.submodule_search_locations)[0]) / "communicator_objects"


def serialized_descriptor(tree: ast.Module, path: Path) -> bytes:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "FileDescriptor":
            for kw in node.keywords:
                if kw.arg == "serialized_pb":
                    value = kw.value
                    if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "_b":
                        # protoc 3.x's `_b = lambda x: x.encode('latin1')` (a py2/py3 shim)
                        return ast.literal_eval(value.args[0]).encode("latin1")
                    return ast.literal_eval(value)
    raise SystemExit(f"{path}: no FileDescriptor(serialized_pb=...) found; not a protoc 3.x module")


def dependency_imports(tree: ast.Module) -> list[str]:
    """The module's imports of the other _pb2 modules its .proto depends on (they register first)."""
    out = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mlagents_envs"):
            for alias in node.names:
                if alias.name.endswith("_pb2"):
                    out.append(f"from {node.module} import {alias.name} as {alias.asname or alias.name}  # noqa: F401")
    return out


def rewrite(path: Path) -> str:
    tree = ast.parse(path.read_text())
    blob = serialized_descriptor(tree, path)
    module = f"mlagents_envs.communicator_objects.{path.stem}"
    return "\n".join([
        f"{MARK} from the serialized descriptor protoc 3.x wrote into this file; do not edit.",
        "from google.protobuf import descriptor_pool as _descriptor_pool",
        "from google.protobuf import symbol_database as _symbol_database",
        "from google.protobuf.internal import builder as _builder",
        "",
        "_sym_db = _symbol_database.Default()",
        *dependency_imports(tree),
        "",
        f"DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile({blob!r})",
        "_builder.BuildMessageAndEnumDescriptors(DESCRIPTOR, globals())",
        f"_builder.BuildTopDescriptorsAndMessages(DESCRIPTOR, {module!r}, globals())",
        "",
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only say whether every module is rewritten")
    args = ap.parse_args()
    # Modules already built from AddSerializedFile (protoc 3.20's newer form) load on protobuf 4 as they are.
    pending = [p for p in sorted(package_dir().glob("*_pb2.py"))
               if not any(mark in p.read_text() for mark in (MARK, "AddSerializedFile("))]
    if args.check:
        print(f"{len(pending)} module(s) still in protoc 3.x form" + (": " + ", ".join(p.name for p in pending)
                                                                       if pending else ""))
        sys.exit(1 if pending else 0)
    texts = {path: rewrite(path) for path in pending}  # all parsed before anything is written
    for path, text in texts.items():
        tmp = path.with_suffix(".py.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    for cache in package_dir().glob("__pycache__/*_pb2.*.pyc"):
        cache.unlink()
    print(f"mlagents_envs protobuf modules: {len(pending)} rewritten for protobuf 4 "
          f"({package_dir()})")


if __name__ == "__main__":
    main()
