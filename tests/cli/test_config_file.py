"""Dataset roots from the config file and --data flags: search order, precedence, relative paths, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from mopro_bench.config import DataRoots, UserConfig, load_user_config, split_data_flag, user_config_path
from mopro_bench.errors import BenchError


@pytest.fixture
def places(tmp_path, monkeypatch):
    """An empty working directory and an empty XDG config home (the user's own files never leak in)."""
    cwd, xdg = tmp_path / "cwd", tmp_path / "xdg"
    cwd.mkdir()
    xdg.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    return cwd, xdg


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_search_order_working_directory_then_xdg(places):
    cwd, xdg = places
    assert load_user_config() == UserConfig()  # no file anywhere: nothing configured, no error
    user = write(xdg / "mopro-bench" / "config.toml", '[data]\nvoc07 = "/xdg/voc"\n')
    assert user_config_path() == user
    cfg = load_user_config()
    assert cfg.path == user and cfg.data == {"voc07": Path("/xdg/voc")}
    local = write(cwd / "mopro-bench.toml", '[data]\nplaces205 = "/local/places"\n')
    cfg = load_user_config()  # the first file found is used; files are not merged
    assert cfg.path.resolve() == local.resolve() and cfg.data == {"places205": Path("/local/places")}
    other = write(cwd / "sub" / "other.toml", '[data]\nimagenet = "in"\nimagenet-r = "~/imr"\n')
    cfg = load_user_config(other)  # --config wins; relative to the file's folder; ~ expanded
    assert cfg.data == {"imagenet": other.parent / "in", "imagenet-r": Path.home() / "imr"}


def test_xdg_default_is_dot_config(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert user_config_path() == tmp_path / ".config" / "mopro-bench" / "config.toml"


@pytest.mark.parametrize("text,needle", [
    ("[data\nvoc07 = 1", "is not valid TOML"),
    ("[data]\nvoc = \"/x\"\n", "'voc' is not a dataset kind"),
    ("[data]\nvoc07 = 3\n", "voc07 must be a path in quotes"),
    ("[paths]\nvoc07 = \"/x\"\n", "unknown section or key 'paths'"),
    ("data = 3\n", "data must be a table"),
])
def test_bad_config_files_are_one_line_errors_naming_the_file(places, text, needle):
    cwd, _ = places
    path = write(cwd / "mopro-bench.toml", text)
    with pytest.raises(BenchError) as e:
        load_user_config()
    assert str(path.name) in e.value.message and needle in e.value.message and e.value.fix


def test_explicit_config_must_exist(places):
    with pytest.raises(BenchError, match="config file .*nope.toml does not exist"):
        load_user_config("nope.toml")


def test_data_flags_kind_or_plain():
    assert split_data_flag("voc07=/data/v") == ("voc07", "/data/v")
    assert split_data_flag("imagenet-r=rel/x=y") == ("imagenet-r", "rel/x=y")
    assert split_data_flag("/data/a=b") == (None, "/data/a=b")  # not a kind before '=': a path with '=' in it
    with pytest.raises(BenchError, match="gives no path"):
        split_data_flag("coco=")


def test_flag_wins_over_config_and_missing_kind_names_both_ways(tmp_path):
    cfg = UserConfig(path=tmp_path / "c.toml", data={"voc07": Path("/cfg/voc"), "coco": Path("/cfg/coco")})
    roots = DataRoots.from_args(["voc07=/flag/voc"], cfg)
    assert roots.lookup("voc07") == (Path("/flag/voc"), "--data voc07=...")
    assert roots.lookup("coco") == (Path("/cfg/coco"), f"config {tmp_path / 'c.toml'}")
    with pytest.raises(BenchError) as e:
        roots.root("imagenet-a", "imagenet_a")
    assert e.value.message == "no imagenet-a dataset root for task imagenet_a"
    assert "--data imagenet-a=PATH" in e.value.fix
    assert 'imagenet-a = "PATH" under [data] in ' + str(tmp_path / "c.toml") in e.value.fix


def test_plain_data_path_only_for_one_kind():
    roots = DataRoots.from_args(["/d"], UserConfig())
    roots.check_plain(["imagenet", "imagenet"])  # imagenet_1pct + imagenet_10pct: one kind, fine
    assert roots.root("imagenet", "imagenet_1pct") == Path("/d")
    with pytest.raises(BenchError, match="does not say which dataset") as e:
        roots.check_plain(["voc07", "places205"])
    assert "--data places205=PATH --data voc07=PATH" in e.value.fix
    with pytest.raises(BenchError, match="2 plain paths"):
        DataRoots.from_args(["/a", "/b"], UserConfig())
    with pytest.raises(BenchError, match="two roots for voc07"):
        DataRoots.from_args(["voc07=/a", "voc07=/b"], UserConfig())
