#!/usr/bin/env python3
"""Compiles every public header of include/fewstep/ on its own (-fsyntax-only), so each one
includes what it uses. Prints the headers that fail with the compiler's first error lines."""
from __future__ import annotations

import argparse
import concurrent.futures
import os
import subprocess
import sys


def compile_one(compiler: str, includes: list[str], header: str) -> tuple[str, str]:
    command = [compiler, "-std=c++17", "-fsyntax-only", "-x", "c++", "-D_GLIBCXX_USE_CXX11_ABI=1"]
    command += [f"-I{d}" for d in includes] + [header]
    result = subprocess.run(command, capture_output=True, text=True)
    return header, "" if result.returncode == 0 else "\n".join(result.stderr.splitlines()[:8])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--compiler", required=True)
    parser.add_argument("--include", action="append", default=[], help="an include directory (repeatable)")
    parser.add_argument("--include-file", help="a file of include directories, one per line; the first is fewstep's")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    includes = [d for d in args.include if d]
    if args.include_file:
        with open(args.include_file, encoding="utf-8") as f:
            includes += [line.strip() for line in f if line.strip()]
    if not includes:
        parser.error("no include directories: pass --include or --include-file")
    root = os.path.join(includes[0], "fewstep")
    headers = sorted(os.path.join(d, n) for d, _, fs in os.walk(root) for n in fs if n.endswith(".h"))
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(lambda h: compile_one(args.compiler, includes, h), headers))
    failed = [(h, err) for h, err in results if err]
    for header, err in failed:
        print(f"{os.path.relpath(header, includes[0])} does not compile on its own:\n{err}\n")
    print(f"{len(headers) - len(failed)} of {len(headers)} public headers compile on their own")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
