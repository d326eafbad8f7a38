"""Contract test for task plug-ins: every registered task (built-in or entry point) goes through the generic path.

A new task is tested here by being registered: its protocols resolve, their constants serialise to JSON, a ``--set``
override gives a deterministic ``+hash`` protocol id, its declared ``eval`` options are valid specs that agree with
every other task's, and ``mopro-bench tasks`` lists it. Nothing here reads data or runs a task.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re

import pytest

from mopro_bench.registry import Option, Protocol, Task, get_task, option_specs, registry

TASKS = registry()
PROTOCOLS = [(name, proto) for name, task in TASKS.items() for proto in task.protocols]


def test_the_built_in_tasks_are_registered():
    from mopro_bench.registry import BUILTIN_TASKS

    assert set(BUILTIN_TASKS) <= set(TASKS)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_declares_what_the_generic_path_needs(name):
    task = TASKS[name]
    assert isinstance(task, Task) and task.name == name and re.fullmatch(r"[a-z0-9_]+", name)
    assert task.description and task.data_kind and task.protocols
    assert task.default_protocol in task.protocols
    assert task.metrics and len(set(task.metrics)) == len(task.metrics)
    assert set(task.higher_is_better) <= set(task.metrics)
    # the splits it reads (data.complete counts them; ImageNet-R/-A name their one folder tree "all": the split name
    # is part of record identities, so it stays)
    assert task.splits, f"{name} names no splits: its records could never be complete"
    for key, proto in task.protocols.items():
        assert isinstance(proto, Protocol) and dataclasses.is_dataclass(proto) and proto.name == key
        assert proto.version and proto.description


@pytest.mark.parametrize("name,proto", PROTOCOLS, ids=[f"{n}@{p}" for n, p in PROTOCOLS])
def test_protocol_resolves_serialises_and_hashes_overrides(name, proto):
    r = get_task(f"{name}@{proto}")
    assert r.task is TASKS[name] and r.protocol.name == proto and r.protocol_id == f"{name}@{proto}"
    params = r.protocol.params()
    assert json.loads(json.dumps(params, allow_nan=False)) == json.loads(json.dumps(params))  # plain JSON
    assert not {"name", "version", "description"} & set(params)
    # one numeric constant changed: a +hash id, deterministic, different from the base and from another value
    field, value = next((k, v) for k, v in params.items() if isinstance(v, int | float) and not isinstance(v, bool))
    new = value + 1 if isinstance(value, int) else value * 0.5 + 0.25
    a, b = get_task(f"{name}@{proto}", {field: new}), get_task(f"{name}@{proto}", {field: new})
    assert re.fullmatch(rf"{name}@{re.escape(proto)}\+[0-9a-f]{{8}}", a.protocol_id) and a.protocol_id == b.protocol_id
    assert a.protocol.params()[field] == new and a.protocol.version == r.protocol.version
    other = new + 1 if isinstance(value, int) else new * 0.5 + 0.125
    assert get_task(f"{name}@{proto}", {field: other}).protocol_id != a.protocol_id


@pytest.mark.parametrize("name", sorted(TASKS))
def test_options_are_valid_specs(name):
    task = TASKS[name]
    declared = option_specs()
    assert len(set(task.options)) == len(task.options)
    for opt in task.options:
        assert isinstance(opt, str) and re.fullmatch(r"[a-z][a-z0-9_]*", opt)
        assert opt in declared, f"{name} takes --{opt.replace('_', '-')} but no task declares an Option spec for it"
        if isinstance(opt, Option):
            assert opt.help and opt.cli_flag == "--" + opt.replace("_", "-")
            assert not (opt.flag and (opt.type or opt.choices)), "a switch takes no value"
            parser = argparse.ArgumentParser()
            opt.add_to(parser)  # a valid argparse argument
            if opt.choices:
                assert getattr(parser.parse_args([opt.cli_flag, opt.choices[0]]), opt) == opt.choices[0]


def test_eval_task_options_group_is_built_from_the_specs(cli):
    code, out, _ = cli("eval", "--help")
    assert code == 0
    for opt in option_specs().values():
        assert opt.cli_flag in out


def test_tasks_listing_shows_every_protocol(cli):
    code, out, _ = cli("tasks", "--json")
    assert code == 0
    listed = {row["id"] for row in json.loads(out)}
    assert listed == {f"{n}@{p}" for n, p in PROTOCOLS}
