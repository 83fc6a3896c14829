"""Rows placed on and beside the split thresholds of fitted trees."""

from __future__ import annotations

import numpy as np


def rows_at_split_thresholds(estimators, feature_sets, sample):
    """Real rows moved onto and one step either side of each reachable split.

    For every internal node that a row of ``sample`` reaches, the first such
    row is copied six times with the split feature set to: the float32
    rounding of the threshold and its float32 neighbours, the float64
    threshold and its float64 neighbours. Returns the rows and the share of
    internal nodes reached.
    """
    up32, down32 = np.float32(np.inf), np.float32(-np.inf)
    rows, internal, reached = [], 0, 0
    for estimator, features in zip(estimators, feature_sets, strict=True):
        tree = estimator.tree_
        paths = estimator.decision_path(sample[:, features].astype(np.float32)).tocsc()
        for node in np.flatnonzero(tree.children_left != -1):
            internal += 1
            start, end = paths.indptr[node], paths.indptr[node + 1]
            if start == end:
                continue
            reached += 1
            base = sample[paths.indices[start]]
            feature = features[tree.feature[node]]
            t64 = tree.threshold[node]
            t32 = np.float32(t64)
            for value in (
                t32,
                np.nextafter(t32, up32),
                np.nextafter(t32, down32),
                t64,
                np.nextafter(t64, np.inf),
                np.nextafter(t64, -np.inf),
            ):
                row = base.copy()
                row[feature] = float(value)
                rows.append(row)
    return np.array(rows), reached / internal
