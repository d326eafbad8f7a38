"""Dataset layouts: one loader module per layout, plus ``check`` and ``synth``."""
