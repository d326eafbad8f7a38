"""`mopro-bench tasks`: list every registered task@protocol with its version and description."""

from __future__ import annotations

import json

from mopro_bench.registry import all_protocols


def add_parser(sub, parents):
    p = sub.add_parser("tasks", parents=parents, help="list every task@protocol with its version",
                       description="List every registered task@protocol (default protocol marked *), its protocol "
                                   "version and a one-line description. Built-in tasks are listed in code "
                                   "(mopro_bench/registry.py); other packages add theirs through the entry-point group "
                                   "`mopro_bench.tasks`. Then the named suites (task lists) that `eval --suite` runs.")
    p.add_argument("--json", action="store_true", help="print JSON with every protocol's full parameters")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    rows = all_protocols()
    if args.json:
        out = [
            {"id": f"{t.name}@{p.name}", "task": t.name, "protocol": p.name, "default": p.name == t.default_protocol,
             "version": p.version, "description": p.description, "data_kind": t.data_kind,
             "families": list(p.families), "params": p.params()}
            for t, p in rows
        ]
        print(json.dumps(out, indent=2))
        return 0
    width = max((len(f"{t.name}@{p.name}") for t, p in rows), default=10) + 2
    fam_w = max((len(",".join(p.families)) for _, p in rows), default=8) + 1
    print(f"{'task@protocol':<{width}} {'ver':<5} {'data':<11} {'families':<{fam_w}} description")
    for t, p in rows:
        mark = "*" if p.name == t.default_protocol else " "
        print(f"{t.name + '@' + p.name + mark:<{width}} {p.version:<5} {t.data_kind:<11} {','.join(p.families):<{fam_w}} "
              f"{p.description}")
    print("\n* = the task's default protocol (used by `--task NAME`). families: the backbones a protocol is defined "
          "for (resnet, vit, convnext); another family is refused with exit 2.")
    from mopro_bench.suites import SUITE_HELP, SUITES

    print("\nsuites (`mopro-bench eval --ckpt CKPT --suite NAME`):")
    for name, specs in SUITES.items():
        print(f"  {name:<16} {', '.join(specs)}")
        print(f"  {'':<16} {SUITE_HELP.get(name, '')}")
    return 0
