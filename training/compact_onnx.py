"""The compact ONNX graph of an Isolation Forest: one tree-ensemble operator.

skl2onnx writes a fitted ``IsolationForest`` as one ``TreeEnsembleRegressor``
per tree plus label encoders, gathers and arithmetic that turn leaf indices
into path lengths: about thirty operators per tree, which onnxruntime runs one
after the other. The compact graph holds the whole forest in a single
``ai.onnx.ml`` ``TreeEnsembleRegressor`` (operator set 3). Each leaf stores its
tree's path length for the rows that reach it, that is the leaf's depth (the
root is at depth 0) plus ``average_path_length(n)`` of the ``n`` training
samples that ended in it, and the operator sums the leaves over the trees.

Input ``X`` is a float32 matrix of the model's features; output
``path_length_sum`` has shape ``(n_rows, 1)``. The anomaly score, as in
``udfs.scoring.Scorer`` for a model whose metadata says ``graph: compact``, is::

    score = 2 ** (-(path_length_sum / n_trees) / average_path_length(max_samples))

which is ``-score_samples`` of scikit-learn: higher is more anomalous.

Exactness
    scikit-learn casts ``X`` to float32 and compares it with float64 split
    thresholds; onnxruntime compares float32 with float32 thresholds. For a
    float32 ``x`` and a float64 ``t``, ``x <= t`` holds exactly when
    ``x <= floor32(t)``, the largest float32 not above ``t``, so every
    threshold is rounded down (rounding to nearest would move about half of
    them up, past inputs that scikit-learn sends right). With ``BRANCH_LEQ``
    nodes, every finite row then reaches the same leaf in both. A NaN follows
    each node's ``missing_go_to_left`` flag in scikit-learn; the graph sets
    ``nodes_missing_value_tracks_true`` from that flag, so NaN rows reach the
    same leaves too, but only when the graph is built with
    ``missing_like_sklearn=True``: the flag makes onnxruntime test for NaN at
    every node, which costs about 15 % of its throughput. By default a NaN
    goes right at every node (onnxruntime's comparison with NaN is false),
    as in skl2onnx's graph; the job never sends NaN, because
    ``udfs.features`` gives finite values for every transaction it scores.
    What remains is float32 arithmetic: leaf values are rounded to float32
    and summed in float32, which moves a 100-tree score by well under 1e-6.

onnxruntime 1.32 also runs the ``TreeEnsemble`` operator of ``ai.onnx.ml`` 5;
it goes through the same kernel and scores this forest no faster, so the
graph keeps operator set 3, which older runtimes load too.

Limitations: dense input only; forests fitted on feature subsets
(``max_features < 1.0``) are supported, bootstrapped feature draws are not
(``IsolationForest`` never makes them).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from sklearn.ensemble import IsolationForest

from training.export import compare_scores
from udfs.explain import SKLEARN_FILE
from udfs.scoring import METADATA_FILE, MODEL_FILE, ModelMetadata, average_path_length

INPUT_NAME = "X"
OUTPUT_NAME = "path_length_sum"
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
_LEAF = -1  # scikit-learn's marker for "no child"


def floor_float32(values: np.ndarray) -> np.ndarray:
    """The largest float32 not above each float64 value."""
    values = np.asarray(values, dtype=np.float64)
    rounded = values.astype(np.float32)
    up = rounded.astype(np.float64) > values
    rounded[up] = np.nextafter(rounded[up], np.float32(-np.inf))
    return rounded


def leaf_path_lengths(tree) -> np.ndarray:
    """Per node of a fitted ``tree_``: depth plus the expected rest of the path.

    Only the leaves' entries are used: the path length of a row that ends in
    that leaf, as scikit-learn's ``score_samples`` adds it up.
    """
    depth = np.zeros(tree.node_count, dtype=np.int64)
    # Children always have larger indices than their parent in scikit-learn.
    for node in range(tree.node_count):
        for child in (tree.children_left[node], tree.children_right[node]):
            if child != _LEAF:
                depth[child] = depth[node] + 1
    expected_rest = np.array(
        [average_path_length(float(n)) for n in tree.n_node_samples]
    )
    return depth + expected_rest


def _tree_features(forest: IsolationForest, n_features: int) -> list[np.ndarray]:
    """Per tree, the input column of each of the tree's feature indices."""
    if isinstance(forest.max_features, (int, np.integer)):
        used = int(forest.max_features)
    else:
        used = max(1, int(forest.max_features * n_features))
    if used == n_features:
        # scikit-learn fits and applies every tree on the unpermuted input.
        identity = np.arange(n_features)
        return [identity] * len(forest.estimators_)
    return [np.asarray(f) for f in forest.estimators_features_]


def export_compact(
    forest: IsolationForest, n_features: int, missing_like_sklearn: bool = False
) -> bytes:
    """The fitted ``forest`` as one TreeEnsembleRegressor, serialized.

    ``missing_like_sklearn`` sends NaN features down the branch scikit-learn
    takes at each node, at a cost in speed (see the module docstring).
    """
    if getattr(forest, "n_features_in_", n_features) != n_features:
        raise ValueError(
            f"n_features must be the {forest.n_features_in_} columns the forest "
            f"was fitted on, got {n_features}"
        )
    nodes = {
        key: []
        for key in (
            "nodes_treeids",
            "nodes_nodeids",
            "nodes_featureids",
            "nodes_values",
            "nodes_modes",
            "nodes_truenodeids",
            "nodes_falsenodeids",
            "target_treeids",
            "target_nodeids",
            "target_ids",
            "target_weights",
        )
    }
    columns = _tree_features(forest, n_features)
    for tree_id, (estimator, features) in enumerate(
        zip(forest.estimators_, columns, strict=True)
    ):
        _add_tree(nodes, tree_id, estimator.tree_, features, missing_like_sklearn)

    ensemble = helper.make_node(
        "TreeEnsembleRegressor",
        [INPUT_NAME],
        [OUTPUT_NAME],
        domain="ai.onnx.ml",
        name="isolation_forest",
        n_targets=1,
        aggregate_function="SUM",
        post_transform="NONE",
        **nodes,
    )
    graph = helper.make_graph(
        [ensemble],
        "isolation_forest_compact",
        [
            helper.make_tensor_value_info(
                INPUT_NAME, TensorProto.FLOAT, [None, n_features]
            )
        ],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [None, 1])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(d, v) for d, v in TARGET_OPSET.items()],
        producer_name="txwatch.training.compact_onnx",
    )
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _add_tree(
    nodes: dict, tree_id: int, tree, features: np.ndarray, track_missing: bool
) -> None:
    left, right = tree.children_left, tree.children_right
    leaf = left == _LEAF
    ids = np.arange(tree.node_count)
    branch_features = np.asarray(features)[np.where(leaf, 0, tree.feature)]

    nodes["nodes_treeids"] += [tree_id] * tree.node_count
    nodes["nodes_nodeids"] += ids.tolist()
    nodes["nodes_featureids"] += np.where(leaf, 0, branch_features).tolist()
    nodes["nodes_values"] += np.where(leaf, 0.0, floor_float32(tree.threshold)).tolist()
    nodes["nodes_modes"] += ["LEAF" if is_leaf else "BRANCH_LEQ" for is_leaf in leaf]
    nodes["nodes_truenodeids"] += np.where(leaf, 0, left).tolist()
    nodes["nodes_falsenodeids"] += np.where(leaf, 0, right).tolist()
    if track_missing:
        missing_left = getattr(tree, "missing_go_to_left", None)
        if missing_left is None:
            raise NotImplementedError(
                "missing_like_sklearn needs a scikit-learn whose trees record "
                "where missing values go (1.3 or newer); export without it"
            )
        tracks = nodes.setdefault("nodes_missing_value_tracks_true", [])
        tracks += np.where(leaf, 0, np.asarray(missing_left, dtype=np.int64)).tolist()

    leaves = ids[leaf]
    nodes["target_treeids"] += [tree_id] * len(leaves)
    nodes["target_nodeids"] += leaves.tolist()
    nodes["target_ids"] += [0] * len(leaves)
    nodes["target_weights"] += leaf_path_lengths(tree)[leaves].tolist()


def scores_from_path_length_sum(
    path_length_sum: np.ndarray, n_trees: int, max_samples: int
) -> np.ndarray:
    """Anomaly scores (``-score_samples``) from the graph's output."""
    mean = np.asarray(path_length_sum, dtype=np.float64).reshape(-1) / n_trees
    return np.power(2.0, -mean / average_path_length(max_samples))


def compact_session(onnx_bytes: bytes, threads: int = 1):
    """An onnxruntime session for a compact graph, on ``threads`` cores."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def compact_scores(
    forest: IsolationForest, onnx_bytes: bytes, x: np.ndarray
) -> np.ndarray:
    """Score ``x`` with a compact graph of ``forest``."""
    session = compact_session(onnx_bytes)
    matrix = np.ascontiguousarray(x, dtype=np.float32)
    out = session.run([OUTPUT_NAME], {INPUT_NAME: matrix})[0]
    return scores_from_path_length_sum(
        out, len(forest.estimators_), int(forest.max_samples_)
    )


def check_parity(
    forest: IsolationForest, onnx_bytes: bytes, x: np.ndarray, threshold: float
) -> float:
    """Largest score difference between the graph and scikit-learn on ``x``.

    Raises ``ValueError`` when a score differs by more than
    ``PARITY_TOLERANCE`` or when the two flag different rows at ``threshold``.
    """
    return compare_scores(
        -forest.score_samples(x),
        compact_scores(forest, onnx_bytes, x),
        threshold,
        "compact ONNX",
        "do not deploy this graph",
    )


def write_compact_model(
    forest: IsolationForest,
    model_dir: str | Path,
    metadata: ModelMetadata,
    stage_dir: str | Path | None = None,
) -> ModelMetadata:
    """Write ``forest`` as a model directory whose graph is the compact one.

    ``metadata`` gives the threshold, risk quantiles and feature names (as
    ``training.train`` computes them); the version gets a ``-compact`` suffix
    so that rows scored by either graph can be told apart. The fitted forest
    is saved next to the graph for the explanations of alerts. When
    ``metadata`` has a supervised stage, its files are copied from the model
    directory ``stage_dir``.
    """
    import shutil

    import joblib

    from udfs.explain import SUPERVISED_SKLEARN_FILE
    from udfs.scoring import SUPERVISED_FILE

    if metadata.supervised is not None and stage_dir is None:
        raise ValueError(
            "the metadata has a supervised stage: give stage_dir, the model "
            "directory its files are copied from"
        )
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    if metadata.supervised is not None:
        for name in (SUPERVISED_FILE, SUPERVISED_SKLEARN_FILE):
            shutil.copyfile(Path(stage_dir) / name, model_dir / name)
    onnx_bytes = export_compact(forest, len(metadata.feature_names))
    compact = replace(
        metadata,
        version=f"{metadata.version}-compact",
        graph="compact",
        n_estimators=len(forest.estimators_),
        max_samples=int(forest.max_samples_),
    )
    (model_dir / MODEL_FILE).write_bytes(onnx_bytes)
    joblib.dump(forest, model_dir / SKLEARN_FILE)
    compact.write(model_dir / METADATA_FILE)
    return compact
