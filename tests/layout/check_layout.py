#!/usr/bin/env python3
"""Checks the library's layering (docs/architecture.md) and the umbrella header.

Fails (exit 1, one line per problem) when
  - a header or source of area A includes a header of an area listed after A in LAYERS,
  - a folder of include/fewstep/ or src/ is not an area of LAYERS,
  - a public header is missing from include/fewstep/fewstep.h, or it names one that does not exist,
  - the library's code or docs cite planning documents instead of papers and the repo's docs.
"""
from __future__ import annotations

import os
import re
import sys

# Bottom to top; an area may include itself and the areas before it (docs/architecture.md).
LAYERS = ["core", "schedules", "nets", "models", "io", "control", "solvers", "sample", "data", "metrics", "micro",
          "train", "grids", "psld"]

INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]fewstep/([a-z_]+)/[^">]+[">]')
UMBRELLA_ENTRY = re.compile(r'^\s*#\s*include\s*"(fewstep/[^"]+)"')
PLANNING = re.compile(r"[Ss]eed[- ]00[0-9]|\b[Tt]he seed's|beyond the seed|DESIGN\.md|\b[Ii]ssue [0-9]+\b")


def area_files(root: str):
    for base in ("include/fewstep", "src"):
        top = os.path.join(root, base)
        for directory, _, files in os.walk(top):
            rel = os.path.relpath(directory, top)
            if rel == ".":
                continue
            area = rel.split(os.sep)[0]
            for name in files:
                if name.endswith((".h", ".cpp")):
                    yield area, os.path.join(directory, name)


def check_layers(root: str) -> list[str]:
    problems = []
    rank = {a: i for i, a in enumerate(LAYERS)}
    for area, path in area_files(root):
        if area not in rank:
            problems.append(f"{os.path.relpath(path, root)}: area '{area}' is not in LAYERS "
                            f"(add it to tests/layout/check_layout.py and docs/architecture.md)")
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                m = INCLUDE.match(line)
                if m and m.group(1) in rank and rank[m.group(1)] > rank[area]:
                    problems.append(f"{os.path.relpath(path, root)}:{number}: area '{area}' includes "
                                    f"'{m.group(1)}', a higher layer ({line.strip()})")
    return problems


def check_umbrella(root: str) -> list[str]:
    include = os.path.join(root, "include")
    public = set()
    for directory, _, files in os.walk(os.path.join(include, "fewstep")):
        for name in files:
            if name.endswith(".h"):
                public.add(os.path.relpath(os.path.join(directory, name), include))
    public.discard("fewstep/fewstep.h")
    with open(os.path.join(include, "fewstep", "fewstep.h"), encoding="utf-8") as f:
        listed = {m.group(1) for m in map(UMBRELLA_ENTRY.match, f) if m}
    problems = [f"include/fewstep/fewstep.h does not include '{h}'" for h in sorted(public - listed)]
    problems += [f"include/fewstep/fewstep.h includes '{h}', which does not exist" for h in sorted(listed - public)]
    return problems


def check_citations(root: str) -> list[str]:
    problems = []
    for base in ("include", "src", "cli", "python", "benchmarks", "docs", "examples", "README.md"):
        top = os.path.join(root, base)
        paths = [top] if os.path.isfile(top) else [os.path.join(d, n) for d, _, fs in os.walk(top) for n in fs]
        for path in paths:
            if not path.endswith((".h", ".cpp", ".py", ".md", ".txt", ".ipynb")):
                continue
            with open(path, encoding="utf-8", errors="replace") as f:
                for number, line in enumerate(f, 1):
                    if PLANNING.search(line):
                        problems.append(f"{os.path.relpath(path, root)}:{number}: cite a paper (arXiv id) or "
                                        f"docs/ instead of planning documents: {line.strip()[:120]}")
    return problems


def main() -> int:
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..")
    root = os.path.abspath(root)
    problems = check_layers(root) + check_umbrella(root) + check_citations(root)
    for p in problems:
        print(p)
    if not problems:
        print(f"layout ok: {len(LAYERS)} areas in order, umbrella header complete")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
