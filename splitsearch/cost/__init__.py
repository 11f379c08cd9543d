"""Everything that measures a candidate before it trains: parameters, MACs, FLOPs, activation
memory and latency, and fitting its width to a budget.

=======================  =====================================================================
:mod:`.figures`          the figures themselves (no torch): :class:`.figures.CandidateCost`,
                         :class:`.figures.Latency`
:mod:`.counting`         params, MACs, FLOPs and activation memory, counted on the meta device
:mod:`.paper_macs`       MACs counted per module as the divide-and-co-train authors counted them
:mod:`.fitting`          the widest network under a budget
:mod:`.latency`          the measured forward time of a candidate as it would be deployed
:mod:`.published`        the papers' published cost tables, which the counting is checked against
=======================  =====================================================================

The package imports nothing itself, so the store can read :mod:`.figures` without torch.
"""
