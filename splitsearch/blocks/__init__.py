"""The layer below the models: the parts and rules every family builds its networks from.

The model families (:mod:`splitsearch.models`) import from here; nothing here imports a model
or a whole-network transformation (:mod:`splitsearch.split`), so a family can be added without
touching the split code, and the transformations reach a network only through its hooks.

=========================  =====================================================================
:mod:`.divide`             divide and co-train: each family's widths for S small networks
:mod:`.factors`            block-wise split: the factors K_b and the groups of each convolution
:mod:`.fusion`             block-wise split: the fusion that mixes a split block's branches
:mod:`.semantic_groups`    semantic split: its settings, groups per stage, width divisors
:mod:`.hooks`              what a network tells the transformations about its parts
=========================  =====================================================================

:mod:`.divide`, :mod:`.factors` and :mod:`.semantic_groups` do not import torch: the config
checks a candidate with them before anything is built.
"""
