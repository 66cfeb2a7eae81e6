"""Published numbers to put ours beside: the paper's Tables 1-3 and MedMNIST v2's from-scratch ResNet-18
(``data/paper_results.csv``, each row with its source)."""

from __future__ import annotations

from importlib import resources

import pandas as pd

from lib25d.models import METHODS

BEYOND = "beyond the paper"  # the paper column of a method the paper does not have


def paper_results(table: str | None = None) -> pd.DataFrame:
    """Published numbers as rows (table, method, dataset, metric, value): the paper's Tables 1-3
    and, as table ``medmnist_v2``, MedMNIST v2's from-scratch ResNet-18 (methods 2.5d, 3d, acs)."""
    with resources.as_file(resources.files("study") / "data" / "paper_results.csv") as path:
        frame = pd.read_csv(path, comment="#")
    return frame if table is None else frame[frame.table == table].reset_index(drop=True)


def v2_method(method: str) -> str:
    """MedMNIST v2's row for one of our methods: 3d and acs their own, every 2.5D reducer '2.5d'."""
    return "2.5d" if method in METHODS and METHODS[method].family == "2.5d" else method
