"""timm training checkpoint ``{state_dict, state_dict_ema, arch, args, version ...}``."""

from __future__ import annotations

import argparse

from mopro_bench.checkpoints.formats.base import is_tensor_dict, jsonable
from mopro_bench.checkpoints.formats.torchvision import TorchvisionAdapter, _networks


class TimmAdapter(TorchvisionAdapter):
    name = "timm"
    priority = 70
    description = "timm training checkpoint (state_dict / state_dict_ema, arch, args)"

    def detect(self, obj):
        return (not is_tensor_dict(obj) and is_tensor_dict(obj.get("state_dict")) and "arch" in obj
                and ("version" in obj or "state_dict_ema" in obj) and bool(_networks(obj)))

    def convert(self, obj, select, where):
        m = super().convert(obj, select, where)
        args = obj.get("args")
        m.meta.update({"source": "timm train.py", "version": jsonable(obj.get("version")),
                       "metric": jsonable(obj.get("metric")),
                       "args": {k: jsonable(v) for k, v in vars(args).items()} if isinstance(args, argparse.Namespace)
                       else None})
        return m


ADAPTER = TimmAdapter()
