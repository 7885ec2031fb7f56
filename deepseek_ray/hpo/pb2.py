"""Tune's ``PB2`` with its exploits recorded, apart from :mod:`.schedulers` because Tune's module imports
scikit-learn and pandas: a search imports it only under ``scheduler: {type: pb2}``.

>>> from deepseek_ray.hpo.pb2 import RecordedPB2
>>> RecordedPB2(time_attr='training_iteration', perturbation_interval=1, hyperparam_bounds={'lr': [1e-4, 1e-2]}).name
'pb2'
"""

from __future__ import annotations

from ray.tune.schedulers.pb2 import PB2

from .schedulers import RecordsExploits


class RecordedPB2(RecordsExploits, PB2):
    """Tune's ``PB2``, its exploits recorded (:class:`~.schedulers.RecordsExploits`)."""

    name = "pb2"
