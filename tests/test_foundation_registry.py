"""Task registry: entry-point discovery, task@protocol resolution, overrides and the unknown-task error."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from mopro_bench import registry
from mopro_bench.errors import BenchError
from mopro_bench.registry import Protocol, Task, TaskOutput, get_task


@dataclass(frozen=True)
class ToyProtocol(Protocol):
    k: int = 3
    lr: float = 0.5
    ks: tuple[int, ...] = (1, 2)


class ToyTask(Task):
    name = "toy_task"
    description = "a task registered by a test"
    data_kind = "voc07"
    protocols = {
        "a": ToyProtocol("a", "1", "protocol a"),
        "b": ToyProtocol("b", "2", "protocol b", k=5),
    }
    default_protocol = "a"
    metrics = ("score",)
    options = ("solver",)

    def run(self, model, data_root, protocol, ctx):
        return TaskOutput(metrics={"score": float(protocol.k) * protocol.lr}, details={"seen_solver": ctx.option("solver")},
                          selection="toy")


@pytest.fixture
def toy():
    task = registry.register(ToyTask())
    yield task
    registry.unregister(task.name)


def test_builtin_tasks_are_listed_in_code_not_as_entry_points():
    from importlib import metadata

    assert {"voc_lowshot", "places_lowshot", "imagenet_r", "imagenet_a", "coco_maskrcnn"} <= set(registry.BUILTIN_TASKS)
    assert list(registry.registry())[: len(registry.BUILTIN_TASKS)] == list(registry.BUILTIN_TASKS)
    declared = {ep.name for ep in metadata.entry_points(group=registry.ENTRY_POINT_GROUP)}
    assert not declared & set(registry.BUILTIN_TASKS), "a built-in task is also an entry point (reinstall)"


def test_entry_point_discovery_uses_the_group(monkeypatch, capsys):
    """A third-party package adds a task through the entry-point group, without touching the suite; a broken one or
    one that reuses a built-in's name is a warning, not a crash."""
    from importlib import metadata

    from mopro_bench import plugins

    ep = metadata.EntryPoint(name="toy_task", value=f"{__name__}:ToyTask", group=registry.ENTRY_POINT_GROUP)
    broken = metadata.EntryPoint(name="broken", value="no_such_module_xyz:TASK", group=registry.ENTRY_POINT_GROUP)
    clash = metadata.EntryPoint(name="voc_lowshot", value=f"{__name__}:ToyTask", group=registry.ENTRY_POINT_GROUP)
    fake = lambda group: [ep, broken, clash] if group == registry.ENTRY_POINT_GROUP else []
    monkeypatch.setattr(plugins.metadata, "entry_points", fake)
    tasks = plugins.Registry("task", validate=lambda name, obj: obj() if isinstance(obj, type) else obj)
    for name, ref in registry.BUILTIN_TASKS.items():
        tasks.register(name, ref)
    monkeypatch.setattr(registry, "TASKS", tasks)
    monkeypatch.setattr(registry, "_READY", False)
    monkeypatch.setattr(registry, "_LOAD_ERRORS", {})
    reg = registry.registry()
    assert list(reg)[-1] == "toy_task" and isinstance(reg["toy_task"], ToyTask)
    assert type(reg["voc_lowshot"]).__name__ == "VOCLowShot"  # the built-in wins
    assert "broken" in registry.load_errors() and "ModuleNotFoundError" in registry.load_errors()["broken"]
    assert "clashes" in registry.load_errors()["voc_lowshot"]
    err = capsys.readouterr().err
    assert "plug-in 'broken'" in err and "plug-in 'voc_lowshot'" in err and len(err.strip().splitlines()) == 2


def test_plugin_registry_type():
    from mopro_bench.plugins import Registry

    reg = Registry("widget", hint="(see `widgets`)")
    reg.register("a", 1)
    reg.register("pi", "math:pi")  # lazy
    assert reg.register("f")(len) is len  # decorator form returns the object
    assert reg.names() == ["a", "pi", "f"] and "pi" in reg and len(reg) == 3
    assert reg.get("pi") == pytest.approx(3.14159, abs=1e-4) and dict(reg.items())["f"] is len
    with pytest.raises(BenchError, match=r"unknown widget 'z' -- fix: use one of: a, pi, f \(see `widgets`\)"):
        reg.get("z")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", 2)
    reg.register("a", 2, replace=True)
    assert reg.get("a") == 2
    reg.unregister("a")
    assert reg.names() == ["pi", "f"]


def test_resolve_default_and_named_protocol(toy):
    r = get_task("toy_task")
    assert r.protocol.name == "a" and r.protocol_id == "toy_task@a"
    r = get_task("toy_task@b")
    assert r.protocol.k == 5 and r.protocol.version == "2"


def test_overrides_change_the_protocol_id(toy):
    r = get_task("toy_task@a", {"k": 7, "ks": [4, 8]})
    assert r.protocol.k == 7 and r.protocol.ks == (4, 8)
    assert r.protocol_id.startswith("toy_task@a+") and len(r.protocol_id) == len("toy_task@a+") + 8
    assert get_task("toy_task@a", {"k": 7, "ks": [4, 8]}).protocol_id == r.protocol_id  # deterministic
    assert get_task("toy_task@a", {"k": 8}).protocol_id != r.protocol_id


def test_bad_override_and_unknown_names(toy):
    with pytest.raises(BenchError, match="unknown setting 'nope'.*k, lr, ks"):
        get_task("toy_task", {"nope": 1})
    with pytest.raises(BenchError, match="expected an integer"):
        get_task("toy_task", {"k": "x"})
    with pytest.raises(BenchError, match="unknown setting 'version'"):
        get_task("toy_task", {"version": "9"})
    with pytest.raises(BenchError, match=r"no protocol 'zzz'.*toy_task@a, toy_task@b"):
        get_task("toy_task@zzz")
    with pytest.raises(BenchError, match="unknown task 'nope'.*toy_task"):
        get_task("nope")


def test_tasks_command_lists_protocols(toy, cli):
    code, out, _ = cli("tasks")
    assert code == 0
    assert "toy_task@a*" in out and "toy_task@b " in out and "a task registered" not in out  # protocol descriptions
    assert "protocol b" in out


def test_eval_runs_a_registered_task_and_refuses_foreign_options(toy, cli, tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    code, out, err = cli("eval", "--ckpt", "random:resnet18", "--task", "toy_task@b", "--data", data,
                         "--results-dir", tmp_path / "res", "--solver", "sklearn", "--out", tmp_path / "r.json")
    assert code == 0, err
    files = list((tmp_path / "res").rglob("*.json"))
    assert len(files) == 1 and files[0].parent.name == "toy_task@b"
    from mopro_bench.results import read_record

    rec = read_record(files[0])
    assert rec["metrics"] == {"score": 2.5} and rec["details"]["seen_solver"] == "sklearn"
    assert rec["protocol"]["params"] == {"k": 5, "lr": 0.5, "ks": [1, 2]}
    assert read_record(tmp_path / "r.json")["metrics"] == rec["metrics"]
    code, _, err = cli("eval", "--ckpt", "random:resnet18", "--task", "toy_task", "--data", data,
                       "--results-dir", tmp_path / "res", "--head", "x.pt")
    assert code == 2 and "--head does not apply to task toy_task" in err and len(err.strip().splitlines()) == 1
