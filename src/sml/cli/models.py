"""`sml models`: the registered networks and the zoo's published checkpoints, with cache status."""
from __future__ import annotations

import argparse
import json

EPILOG = """\
examples:
  sml models                 # table of architectures and zoo entries
  sml models --verbose       # also URLs, sha256 and where cached files are
  sml models --json          # machine-readable

Weights of a zoo entry are fetched on first use (sml.models.load(NAME)) into
$SML_CACHE (default ~/.cache/sml) and checked against their sha256; a file in
the directory $SML_MIRROR with the entry's file name is used instead of the
URL, and --weights PATH overrides both.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list built-in networks and published checkpoints",
                       description="List the registered network architectures and the model zoo "
                                   "(published checkpoints), with input size, classes and whether "
                                   "the weights are cached here.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--verbose", "-v", action="store_true", help="also print URLs, checksums and file paths")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def rows() -> list[dict]:
    """One dict per architecture and per zoo entry (what the table shows)."""
    from sml.models import registry, zoo

    out = []
    for name in registry.list_models():
        _, cfg = registry.get_model(name)
        out.append({"name": name, "kind": "architecture",
                    "input_size": list(cfg.input_size) if cfg.input_size else None,
                    "classes": len(cfg.class_names), "normalization": "imagenet" if cfg.mean else "none",
                    "weights": "--weights PATH", "description": cfg.description})
    for name in zoo.list_zoo():
        e = zoo.ZOO[name]
        where = zoo.locate(name)
        status = f"cached ({where})" if where else ("not cached" if e.urls else "manual download")
        out.append({"name": name, "kind": "zoo", "arch": e.arch,
                    "input_size": list(e.input_size) if e.input_size else None,
                    "classes": len(e.class_names), "normalization": "imagenet" if e.mean else "none",
                    "weights": status, "description": e.notes, "filename": e.filename, "urls": list(e.urls),
                    "sha256": e.sha256, "homepage": e.homepage, "license": e.license,
                    "reference_statistics": e.stats_mean is not None})
    return out


def run(args: argparse.Namespace) -> int:
    table = rows()
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    header = ("NAME", "KIND", "INPUT (HxW)", "CLASSES", "NORM", "WEIGHTS")
    lines = []
    for r in table:
        size = "x".join(map(str, r["input_size"])) if r["input_size"] else "native"
        weights = r["weights"] if args.verbose or not r["weights"].startswith("cached") else "cached"
        lines.append((r["name"], r["kind"], size, str(r["classes"]), r["normalization"], weights))
    widths = [max(len(row[i]) for row in (header, *lines)) for i in range(len(header))]
    for row in (header, *lines):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    if args.verbose:
        for r in table:
            if r["kind"] == "zoo":
                print(f"\n{r['name']}: {r['description']}")
                print(f"  file {r['filename']}  sha256 {r['sha256'] or 'unknown (not published)'}")
                for url in r["urls"] or ["(no direct URL; see homepage)"]:
                    print(f"  url  {url}")
                print(f"  home {r['homepage']}  licence {r['license']}")
                if r["reference_statistics"]:
                    print("  ships the published class statistics")
    return 0
