"""mopro-bench: MoPro pretraining and a versioned transfer-evaluation suite for visual backbones."""

__version__ = "0.1.0"

from mopro_bench.errors import BenchError  # noqa: E402

__all__ = ["BenchError", "__version__"]
