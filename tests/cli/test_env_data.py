"""`mopro-bench env` lists every dataset kind's root (flag > config file) and whether it passes `data check`."""

from __future__ import annotations

import json


def test_env_shows_configured_roots_their_origin_and_check(cli, synth_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    voc = synth_root("voc07")
    broken = tmp_path / "imr_broken"
    broken.mkdir()
    (broken / "not_a_wnid").mkdir()  # an ImageNet-R tree must hold wnid folders
    cfg = tmp_path / "mopro-bench.toml"
    cfg.write_text(f'[data]\nvoc07 = "/nonexistent/voc"\nimagenet = "/nonexistent/imagenet"\nimagenet-r = "{broken.name}"\n')
    code, out, err = cli("env", "--json", "--data", f"voc07={voc}")
    assert code == 0, err
    info = json.loads(out)
    assert info["config_file"] == str(cfg)
    d = info["data"]
    assert d["voc07"]["root"] == str(voc) and d["voc07"]["source"] == "--data voc07=..."  # the flag wins
    assert d["voc07"]["status"] == "usable with warnings" and "official set has 5011" in d["voc07"]["message"]
    assert d["imagenet"] == {"root": "/nonexistent/imagenet", "source": f"config {cfg}", "status": "not usable",
                             "message": "dataset root /nonexistent/imagenet does not exist -- fix: pass the folder that "
                                        "holds the dataset"}
    assert d["imagenet-r"]["root"] == str(broken) and d["imagenet-r"]["status"] == "not usable"
    assert {k for k, v in d.items() if v["status"] == "not set"} == {"webvision", "places205", "coco", "imagenet-a"}

    code, out, _ = cli("env", "--no-data-check")
    assert code == 0 and f"config file      {cfg}" in out
    assert "data voc07       not checked          /nonexistent/voc  (from config " in out
    assert "data coco        not set" in out

    code, _, err = cli("env", "--data", str(voc))
    assert code == 2 and "does not say which dataset" in err
