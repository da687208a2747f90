#!/usr/bin/env python3
"""Describe or verify a model folder: file list, sizes and sha256 (stdlib only, prints JSON).

  --write-manifest FILE   write the folder's manifest (what every node must then match)
  --print-manifest        print it instead
  --manifest FILE         verify the folder against a manifest
A small cache (.r1deploy-verified.json in the folder, keyed by size and mtime) avoids re-hashing
tens of GB on every run; a changed file is hashed again. Files are hashed in parallel (hashlib
releases the GIL on large blocks): a model is a few dozen multi-GB shards, and one core hashes
~0.5-1.5 GB/s, slower than the disks and the 10/25 GbE links of a GPU node.
"""

import argparse
import concurrent.futures
import hashlib
import json
import os
import sys

CACHE = ".r1deploy-verified.json"
SKIP = {CACHE, ".cache"}


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe(folder: str) -> dict:
    cache_path = os.path.join(folder, CACHE)
    try:
        with open(cache_path, encoding="utf-8") as handle:
            cache = json.load(handle)
    except (OSError, ValueError):
        cache = {}
    found = []  # (relative path, path, size, cache key)
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in SKIP)
        for name in sorted(names):
            if name in SKIP or name.startswith(".r1deploy-tmp"):
                continue
            path = os.path.join(root, name)
            stat = os.stat(path)
            key = f"{stat.st_size}:{stat.st_mtime_ns}"
            found.append((os.path.relpath(path, folder), path, stat.st_size, key))
    digests = {}
    todo = {}
    for rel, path, _, key in found:
        cached = cache.get(rel) or {}
        if cached.get("key") == key:
            digests[rel] = cached["sha256"]
        else:
            todo[rel] = path
    # Runs on the hosts' python3 (3.9 on Rocky 9): no zip(strict=...).
    workers = max(1, min(len(todo), os.cpu_count() or 1, 8))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {rel: pool.submit(sha256, path) for rel, path in todo.items()}
        for rel, future in futures.items():
            digests[rel] = future.result()
    files = {rel: {"size": size, "sha256": digests[rel], "key": key} for rel, _, size, key in found}
    if os.access(folder, os.W_OK):
        tmp = cache_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(files, handle)
        os.replace(tmp, cache_path)
    return {rel: {"size": f["size"], "sha256": f["sha256"]} for rel, f in files.items()}


def index_problems(folder: str, files: dict) -> list:
    """Shards named by the safetensors index but absent: an interrupted download."""
    index = os.path.join(folder, "model.safetensors.index.json")
    if not os.path.isfile(index):
        return []
    with open(index, encoding="utf-8") as handle:
        shards = set(json.load(handle).get("weight_map", {}).values())
    return sorted(shard for shard in shards if shard not in files)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder")
    parser.add_argument("--manifest")
    parser.add_argument("--write-manifest")
    parser.add_argument("--print-manifest", action="store_true", help="print only the manifest")
    args = parser.parse_args()
    if not os.path.isdir(args.folder):
        print(json.dumps({"ok": False, "exists": False, "missing": [], "mismatched": []}))
        return 0
    files = describe(args.folder)
    if args.print_manifest:
        print(json.dumps(files, sort_keys=True))
        return 0
    result = {
        "ok": True,
        "exists": True,
        "files": len(files),
        "bytes": sum(f["size"] for f in files.values()),
        "missing": index_problems(args.folder, files),
        "mismatched": [],
    }
    if args.write_manifest:
        with open(args.write_manifest, "w", encoding="utf-8") as handle:
            json.dump(files, handle, indent=1, sort_keys=True)
    if args.manifest:
        with open(args.manifest, encoding="utf-8") as handle:
            expected = json.load(handle)
        result["missing"] += sorted(set(expected) - set(files))
        result["mismatched"] = sorted(
            rel
            for rel, meta in expected.items()
            if rel in files and (files[rel]["size"] != meta["size"] or files[rel]["sha256"] != meta["sha256"])
        )
    result["ok"] = not result["missing"] and not result["mismatched"] and bool(files)
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
