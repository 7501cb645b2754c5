#!/usr/bin/env python3
"""Writes a C++ source holding the dashboard's files (src/admin/assets/)
as byte arrays, with find_asset() to look them up by URL path.

usage: embed_assets.py OUTPUT.cpp FILE...
"""
import os
import sys

TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


def main():
    out_path, files = sys.argv[1], sys.argv[2:]
    lines = ['#include "admin/assets.hpp"', "", "namespace mqttools::admin {", "", "namespace {", ""]
    table = []
    for i, path in enumerate(files):
        name = os.path.basename(path)
        data = open(path, "rb").read()
        body = ",".join(str(b) for b in data)
        lines.append(f"constexpr char file{i}[] = {{{body}{',' if data else ''}0}};")
        kind = TYPES.get(os.path.splitext(name)[1], "application/octet-stream")
        urls = ["/" + name] + (["/"] if name == "index.html" else [])
        for url in urls:
            table.append(f'    {{"{url}", "{kind}", std::string_view(file{i}, {len(data)})}},')
    lines += ["", "constexpr Asset assets[] = {"] + table + ["};", "", "}  // namespace", ""]
    lines += [
        "const Asset* find_asset(std::string_view path) {",
        "    for (const Asset& a : assets) {",
        "        if (a.path == path) return &a;",
        "    }",
        "    return nullptr;",
        "}",
        "",
        "}  // namespace mqttools::admin",
        "",
    ]
    with open(out_path, "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
