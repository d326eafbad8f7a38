"""`mopro-bench zoo`: list the published checkpoints `--ckpt zoo:NAME` can name; `--download NAME` fetches one."""

from __future__ import annotations

import json

HELP = "list the published checkpoints usable as --ckpt zoo:NAME (and download one)"
DESCRIPTION = """List the model zoo: published checkpoints (ResNet-50: MoPro, MoCo, SwAV, DINO, PCL, torchvision
supervised; ViT: DINO, MoCo v3; ConvNeXt-T) with the method, pretraining epochs, backbone family and data, where the
URL was read, whether the file is in the cache (<cache-dir>/checkpoints/) and how many published numbers the package's
published.csv holds for it. Any command that takes --ckpt accepts zoo:NAME (or an https:// / file:// URL): the file is
downloaded once into the cache, verified by SHA-256 (or the published hash prefix) and reused offline. `--download
NAME` fetches one now."""


def add_parser(sub, parents):
    p = sub.add_parser("zoo", parents=parents, help=HELP, description=DESCRIPTION)
    p.add_argument("--download", metavar="NAME", action="append",
                   help="download (and verify) this entry into the cache now; repeatable")
    p.add_argument("--long", action="store_true", help="print every field of each entry (URL, source, citation, notes)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of the table")
    p.set_defaults(func=run)
    return p


def _short(text: str) -> str:
    return text.split(" (", 1)[0]


def rows(cache_dir) -> list[dict]:
    from mopro_bench import hub, zoo
    from mopro_bench.errors import BenchError

    try:
        counts = zoo.published_counts()
    except BenchError as e:  # a damaged published.csv must not hide the zoo; say so instead
        import sys

        sys.stderr.write(f"note: published numbers not counted: {e.line()}\n")
        counts = {}
    out = []
    for e in zoo.entries():
        d = e.to_dict()
        d.pop("extra", None)
        d["filename"] = e.filename
        d["cached"] = hub.is_cached(e, cache_dir)
        d["cache_path"] = str(hub.cache_path(cache_dir, e.url, e))
        d["published_rows"] = counts.get(e.published, 0) if e.published else 0
        out.append(d)
    return out


def run(args) -> int:
    from mopro_bench import hub, zoo

    if args.download:
        for name in args.download:
            e = zoo.get(name.removeprefix("zoo:"))
            got = hub.fetch(e.url, args.cache_dir, entry=e, progress=True)
            how = "downloaded" if got.downloaded else "already cached"
            print(f"{e.name}: {how} {got.path} ({got.bytes / 1e6:.1f} MB) sha256 {got.sha256}")
        return 0
    table = rows(args.cache_dir)
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    if args.long:
        for r in table:
            print(f"zoo:{r['name']}")
            for k in ("method", "arch", "family", "epochs", "pretrain_data", "format", "select", "url", "url_source",
                      "citation", "published", "published_rows", "md5_prefix", "sha256", "cache_path", "cached", "notes"):
                if r.get(k) not in (None, ""):
                    print(f"  {k:<15} {r[k]}")
        return 0
    head = ("NAME", "METHOD", "EPOCHS", "FAMILY", "DATA", "CACHED", "PUBLISHED", "SOURCE")
    lines = [head]
    for r in table:
        pub = f"{r['published_rows']} ({r['published']})" if r["published_rows"] else "-"
        lines.append((r["name"], r["method"], str(r["epochs"] or "-"), r["family"], _short(r["pretrain_data"]),
                      "yes" if r["cached"] else "no", pub, r["url_source"].split(" ", 1)[0]))
    widths = [max(len(x[i]) for x in lines) for i in range(len(head) - 1)]
    for x in lines:
        print("  ".join(c.ljust(w) for c, w in zip(x, widths)) + "  " + x[-1])
    print(f"\nuse as --ckpt zoo:NAME (downloaded once into {hub.checkpoints_dir(args.cache_dir)}); "
          "`mopro-bench zoo --long` shows URLs, citations and notes")
    return 0
