"""`eval` over several checkpoints x tasks: one record per pair, each checkpoint loaded once, failures reported at the
end without stopping the other pairs, one summary table; data roots from --data KIND=PATH and the config file."""

from __future__ import annotations

import re

import pytest
import torch

from mopro_bench.io import sha256_file
from mopro_bench.results import read_record, validate_record
from mopro_bench.suites import SUITES, expand_tasks, headline

TASKS = "voc_lowshot,imagenet_r,imagenet_a"
# --set FIELD=V goes to every task whose protocol has FIELD (resize: all three; image_size/ks/num_samples: VOC;
# crop/calib_bin_size: the robustness tasks)
SETS = ["--set", "image_size=32", "--set", "resize=36", "--set", "ks=[1,2]", "--set", "num_samples=2",
        "--set", "crop=32", "--set", "calib_bin_size=8"]
FAST = ["--device", "cpu", "--workers", "0", "--no-progress"]


@pytest.fixture(scope="module")
def env(synth_root, tmp_path_factory):
    """Two random torchvision ResNet-18 files (their fc is a 1000-way ImageNet classifier, so the robustness tasks
    need no head), a corrupt file, generated VOC07 / ImageNet-R / ImageNet-A and one feature cache."""
    torchvision = pytest.importorskip("torchvision")
    d = tmp_path_factory.mktemp("suite")
    ckpts = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        path = d / f"r18_seed{seed}.pth"
        torch.save(torchvision.models.resnet18().state_dict(), path)
        ckpts.append(path)
    bad = d / "corrupt.pth"
    bad.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    data = {"voc07": synth_root("voc07"), "imagenet-r": synth_root("imagenet-r"), "imagenet-a": synth_root("imagenet-a")}
    return {"ckpts": ckpts, "bad": bad, "data": data, "cache": d / "cache"}


@pytest.fixture
def clean_config(tmp_path, monkeypatch):
    """No config file of the user or of the repository is read: cwd and XDG config home are empty folders."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return cwd


def data_flags(env, *kinds):
    return [a for k in kinds for a in ("--data", f"{k}={env['data'][k]}")]


def parse_table(out: str) -> dict[str, dict[str, str]]:
    """The summary table (Markdown) -> {checkpoint: {column header: cell}}."""
    lines = [ln for ln in out.splitlines() if ln.startswith("| ")]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    head = rows[0]
    return {r[0]: dict(zip(head[1:], r[1:])) for r in rows[1:]}


def test_two_checkpoints_three_tasks_and_a_corrupt_checkpoint(cli, env, tmp_path, clean_config, monkeypatch):
    import mopro_bench.checkpoints as checkpoints

    loads = []
    real_load = checkpoints.load_checkpoint

    def counting_load(spec, **kw):
        loads.append(str(spec))
        return real_load(spec, **kw)

    monkeypatch.setattr(checkpoints, "load_checkpoint", counting_load)
    res = tmp_path / "res"
    a, b = env["ckpts"]
    code, out, err = cli("eval", "--ckpt", a, "--ckpt", env["bad"], "--ckpt", b, "--task", TASKS, *SETS,
                         *data_flags(env, "voc07", "imagenet-r", "imagenet-a"), "--cache-dir", env["cache"],
                         "--results-dir", res, *FAST)
    # the corrupt checkpoint's 3 pairs fail (a user error: exit 2), the 6 others all ran
    assert code == 2, err
    assert loads == [str(a), str(env["bad"]), str(b)]  # each checkpoint loaded once, not once per task
    files = sorted(res.rglob("*.json"))
    assert len(files) == 6
    recs = [read_record(f) for f in files]
    for r in recs:
        validate_record(r)
    by = {(r["checkpoint"]["name"], r["task"]): r for r in recs}
    assert set(by) == {(n, t) for n in (a.name, b.name) for t in ("voc_lowshot", "imagenet_r", "imagenet_a")}
    assert {r["checkpoint"]["sha256"] for r in recs} == {sha256_file(a), sha256_file(b)}
    # the --set values reached the tasks that have those fields, and only those
    assert by[(a.name, "voc_lowshot")]["protocol"]["params"]["image_size"] == 32
    assert by[(a.name, "voc_lowshot")]["protocol"]["params"]["ks"] == [1, 2]
    assert by[(a.name, "imagenet_r")]["protocol"]["params"]["crop"] == 32
    assert by[(a.name, "imagenet_a")]["protocol"]["params"]["calib_bin_size"] == 8
    assert by[(a.name, "voc_lowshot")]["metrics"]["mAP_k2"] != by[(b.name, "voc_lowshot")]["metrics"]["mAP_k2"]

    table = parse_table(out)
    assert set(table) == {a.name, b.name, env["bad"].name}
    assert set(table[env["bad"].name].values()) == {"FAILED"}
    for (name, _task), r in by.items():
        metric, value = headline(r)
        col = f"{r['protocol']['id']} {metric}"
        assert table[name][col] == f"{value:.2f}"
    assert headline(by[(a.name, "voc_lowshot")])[0] == "mAP_k2"  # the largest k measured
    assert "3 of 9 runs FAILED" in err and err.count(f"{env['bad'].name} x ") == 3 and "Traceback" not in err
    bad_lines = [ln for ln in err.splitlines() if ln.strip().startswith(f"{env['bad'].name} x ")]
    assert len(bad_lines) == 3 and all("corrupt.pth" in ln and " -- fix: " in ln for ln in bad_lines)  # the loader's one line


def test_a_bug_in_one_pair_is_exit_1_and_the_others_still_run(cli, env, tmp_path, clean_config, monkeypatch):
    from mopro_bench.registry import get_task

    task = get_task("imagenet_r").task

    def boom(*args, **kw):
        raise ZeroDivisionError("a bug in the task")

    monkeypatch.setattr(task, "run", boom)
    res = tmp_path / "res"
    code, out, err = cli("eval", "--ckpt", env["ckpts"][0], "--task", "imagenet_r", "--task", "voc_lowshot", *SETS,
                         *data_flags(env, "voc07", "imagenet-r"), "--cache-dir", env["cache"], "--results-dir", res, *FAST)
    assert code == 1
    assert [p.parent.name.split("@")[0] for p in res.rglob("*.json")] == ["voc_lowshot"]
    assert "ZeroDivisionError: a bug in the task (a bug: traceback below)" in err and "Traceback (most recent call" in err
    assert parse_table(out)[env["ckpts"][0].name]["imagenet_r"] == "FAILED"


def test_roots_from_config_file_flag_wins_and_a_missing_root_fails_one_pair(cli, env, tmp_path, clean_config):
    # the config points VOC07 somewhere wrong; the flag overrides it. ImageNet-R comes from the config (relative path
    # resolved against the config file's folder). ImageNet-A has no root anywhere: that pair fails, naming both ways.
    link = clean_config / "imr"
    link.symlink_to(env["data"]["imagenet-r"], target_is_directory=True)
    (clean_config / "mopro-bench.toml").write_text('[data]\nvoc07 = "/nonexistent/voc"\nimagenet-r = "imr"\n')
    res = tmp_path / "res"
    url = env["ckpts"][0].resolve().as_uri()  # a URL goes through mopro_bench.hub (file:// stays offline)
    code, out, err = cli("eval", "--ckpt", url, "--task", TASKS, *SETS, *data_flags(env, "voc07"),
                         "--cache-dir", env["cache"], "--results-dir", res, *FAST)
    assert code == 2
    recs = [read_record(p) for p in res.rglob("*.json")]
    assert sorted(r["task"] for r in recs) == ["imagenet_r", "voc_lowshot"]
    assert {r["data"]["root"] for r in recs} == {str(env["data"]["voc07"].resolve()), str(link.resolve())}
    sha = sha256_file(env["ckpts"][0])
    assert [(r["checkpoint"]["source"]["url"], r["checkpoint"]["source"]["sha256"]) for r in recs] == [(url, sha)] * 2
    line = next(ln for ln in err.splitlines() if "imagenet_a: FAILED" in ln)
    assert "no imagenet-a dataset root for task imagenet_a" in line
    assert "--data imagenet-a=PATH" in line and 'imagenet-a = "PATH" under [data] in ' in line and "mopro-bench.toml" in line


def test_command_level_mistakes_stop_before_any_work(cli, env, tmp_path, clean_config):
    ck = env["ckpts"][0]
    base = ("eval", "--ckpt", ck, "--ckpt", ck, "--results-dir", tmp_path / "res", *FAST)
    cases = [
        ((*base, "--task", "voc_lowshot,imagenet_r", "--data", env["data"]["voc07"]), "does not say which dataset"),
        ((*base, "--task", "voc_lowshot,nosuch"), "unknown task 'nosuch'"),
        ((*base, "--task", "voc_lowshot,imagenet_r", "--set", "nosuch=1"), "unknown setting 'nosuch': no task"),
        ((*base, "--task", "voc_lowshot,imagenet_r", "--set", "places_lowshot:ks=[1]"), "task places_lowshot is not part"),
        ((*base, "--task", "voc_lowshot,imagenet_r", "--head", "h.pt"), "--head belongs to one checkpoint"),
        ((*base, "--task", "voc_lowshot,imagenet_r", "--out", "x.json"), "--out takes one checkpoint and one task"),
        ((*base, "--task", "imagenet_r", "--solver", "torch"), "--solver does not apply to any task"),
        ((*base, "--task", "voc_lowshot", "--name", "one"), "1 --name for 2 --ckpt"),
    ]
    for argv, needle in cases:
        code, out, err = cli(*argv)
        assert code == 2 and needle in err and err.count("\n") == 1, (argv, err)
    assert not (tmp_path / "res").exists()


def test_suites_and_task_lists():
    assert expand_tasks(["voc_lowshot,imagenet_r", "voc_lowshot"], ["lowshot"]) == [
        "voc_lowshot", "imagenet_r", "voc_lowshot@mopro", "places_lowshot@mopro"]
    from mopro_bench.registry import get_task

    for name, specs in SUITES.items():  # every suite names registered task@protocol ids
        for spec in specs:
            assert get_task(spec).protocol.name == spec.split("@")[1], (name, spec)
        # ... and one backbone family can run all of them (a suite is never refused pair by pair for every family)
        common = set.intersection(*(set(get_task(s).protocol.families) for s in specs))
        assert common, (name, {s: get_task(s).protocol.families for s in specs})
    assert {get_task(s).protocol.families == ("vit",) for s in SUITES["lowshot-vit"]} == {True}
    # the paper's transfer table: every protocol id the repository's published.csv holds MoPro numbers under
    import csv

    from mopro_bench.leaderboard import DEFAULT_PUBLISHED

    rows = list(csv.DictReader(DEFAULT_PUBLISHED.open(encoding="utf-8")))
    mopro_ids = {r["protocol_id"] for r in rows if r["model"].startswith("MoPro")}
    assert mopro_ids and mopro_ids <= set(SUITES["mopro-transfer"])
    rec = {"metrics": {"mAP_k1": 1.0, "mAP_k1_std": 0.1, "mAP_k4": 4.0, "mAP_k2": 2.0}}
    assert headline(rec, ("mAP_k1", "mAP_k16")) == ("mAP_k4", 4.0)
    assert headline({"metrics": {"calib_rms": 9.0, "top1": 50.0}}, ("top1",)) == ("top1", 50.0)


def test_list_suites(cli):
    code, out, _ = cli("eval", "--list-suites")
    assert code == 0 and re.search(r"^mopro-transfer\s", out, re.M) and "coco_maskrcnn@mopro" in out
    code, out, _ = cli("tasks")
    assert code == 0 and re.search(r"^  lowshot\s+voc_lowshot@mopro, places_lowshot@mopro$", out, re.M)
