"""The docs describe this code: protocol version, no pointers to files users do not have, no dead links."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tempest_gym.bridge import protocol

ROOT = Path(__file__).resolve().parent.parent


def shipped_text_files() -> list[Path]:
    """Tracked and new (not ignored) source and documentation files; without git, the tree minus the usual dirs."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "build", "dist", "logs", "runs"}
        out = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if not skip & set(p.relative_to(ROOT).parts)]
    return [ROOT / f for f in out if f.endswith((".py", ".lua", ".md", ".yml", ".sh", ".tsv")) and (ROOT / f).is_file()]


def test_protocol_doc_names_the_version_the_code_speaks():
    doc = (ROOT / "docs" / "protocol.md").read_text()
    lua = (ROOT / "lua" / "tempest_gym" / "protocol.lua").read_text()
    title = re.match(r"# Wire protocol \(version (\d+)\)", doc)
    assert title and int(title.group(1)) == protocol.PROTOCOL_VERSION
    assert f"protocol.VERSION = {protocol.PROTOCOL_VERSION}" in lua
    welcome = next(line for line in doc.splitlines() if "| WELCOME |" in line)
    assert "u16 protocol version" in welcome and "u16 slot" in welcome
    assert protocol._WELCOME.format == "<BHH"  # type, version, slot


def test_no_pointers_to_files_users_do_not_have():
    offenders = []
    for path in shipped_text_files():
        if path == Path(__file__).resolve():
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if re.search(r"shared/reference|tempest-ram\.md|mame-lua\.md|prior-art\.md", line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "cite docs/ram.md or docs/mame.md instead:\n" + "\n".join(offenders)


def test_cited_docs_exist():
    missing = []
    for path in shipped_text_files():
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for name in re.findall(r"\bdocs/([\w.-]+\.md)", line):
                if not (ROOT / "docs" / name).is_file():
                    missing.append(f"{path.relative_to(ROOT)}:{n}: docs/{name}")
        if path.parent == ROOT / "docs":
            for target in re.findall(r"\]\(([\w.-]+\.md)\)", path.read_text()):
                if not (path.parent / target).is_file():
                    missing.append(f"{path.relative_to(ROOT)}: ({target})")
    assert not missing, "\n".join(missing)
