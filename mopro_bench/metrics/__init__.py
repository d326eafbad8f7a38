"""Metrics, one module per family: ``ap`` (low-shot AP), ``calibration``, ``classification`` (top-k), ``stats``
(bootstrap and paired comparisons). Each function is tested against its reference formula on fixed inputs."""
