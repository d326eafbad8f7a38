"""Evaluation tasks (imported as ``mopro_bench.tasks``); each module registers its tasks via entry points."""
