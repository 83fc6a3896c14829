"""Champion and challenger: MLflow aliases, materialised for the running job.

Source of truth
    The aliases ``champion`` and ``challenger`` of the MLflow registered model
    (``txwatch-iforest`` unless told otherwise) say which versions score. The
    file registry of ``udfs.registry`` (``versions/<version>/`` and the
    one-line pointer files ``champion`` and ``challenger``) is the running
    job's view of them: the job never calls MLflow, it reads a pointer file
    between batches. ``promote`` and ``clear`` change the alias in MLflow
    first and then write the file registry from MLflow, never the other way
    round; ``sync`` rewrites the file registry from MLflow alone, which
    repairs a registry left stale (a crash between the two writes, an alias
    moved in the MLflow UI).

Versions
    A version is named by its txwatch model version (``if-...``, the tag
    ``txwatch.model_version`` of the MLflow version and the value of
    ``scored_transactions.model_version``) or by its MLflow version number.
    A version MLflow knows but the file registry lacks is downloaded from its
    run's ``model/`` artifacts into ``versions/`` before any pointer names it.

Rules
    A version can hold both aliases in MLflow, but promoting the challenger
    to champion removes the challenger alias: shadow scoring a model with
    itself would only repeat its scores. A registry without a champion alias
    in MLflow keeps its champion pointer (the job needs one) and ``sync``
    warns.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from udfs import registry
from udfs.scoring import METADATA_FILE

from .tracking import MODEL_ARTIFACT_PATH, default_tracking_uri

logger = logging.getLogger(__name__)

REGISTERED_MODEL = "txwatch-iforest"
VERSION_TAG = "txwatch.model_version"


class AliasError(LookupError):
    """A version or alias cannot be found in the MLflow registry."""


@dataclass(frozen=True)
class Promotion:
    """What one alias change did: the alias, before and after, in both places."""

    alias: str
    before: str | None  # txwatch model version, None when unset
    after: str | None
    mlflow_version: str | None
    pointers: dict[str, str | None]  # the file registry's pointers afterwards


class ModelAliases:
    """The aliases of one MLflow registered model and the file registry at ``root``.

    Parameters
    ----------
    root
        The file registry the job follows (``--model-dir`` of the job).
    tracking_uri
        MLflow tracking and registry store; None for the project's SQLite store.
    name
        The registered model.
    """

    def __init__(
        self,
        root: str | Path,
        tracking_uri: str | None = None,
        name: str = REGISTERED_MODEL,
    ):
        from mlflow.tracking import MlflowClient

        self.root = Path(root)
        self.name = name
        uri = tracking_uri or default_tracking_uri()
        self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)

    def find(self, version: str):
        """The MLflow model version named by a txwatch version or an MLflow number."""
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.search_model_versions(f"name = '{self.name}'")
        except MlflowException as exc:
            raise AliasError(
                f"cannot read registered model {self.name!r}: {exc}"
            ) from exc
        for candidate in found:
            if candidate.tags.get(VERSION_TAG) == version:
                return candidate
        for candidate in found:
            if str(candidate.version) == version:
                return candidate
        known = sorted(
            f"{c.version}:{c.tags.get(VERSION_TAG, '?')}" for c in found
        ) or ["none"]
        raise AliasError(
            f"no version {version!r} in MLflow registered model {self.name!r} "
            f"(known, as number:model version: {', '.join(known)}); register it "
            "with `txwatch train --track` or `txwatch retrain`, or move only the "
            "registry's pointer with `txwatch promote --file-only`"
        )

    def aliases(self) -> dict[str, str]:
        """MLflow's aliases of the registered model: alias -> txwatch version."""
        from mlflow.exceptions import MlflowException

        try:
            model = self.client.get_registered_model(self.name)
        except MlflowException:
            return {}
        out = {}
        for alias, number in model.aliases.items():
            if alias in registry.ALIASES:
                version = self.client.get_model_version(self.name, number)
                out[alias] = version.tags.get(VERSION_TAG) or str(number)
        return out

    def promote(self, version: str, alias: str = "champion") -> Promotion:
        """Point ``alias`` at ``version`` in MLflow, then in the file registry."""
        _check_alias(alias)
        found = self.find(version)
        before = self.aliases()
        self.materialise(found)  # the files exist before anything points at them
        self.client.set_registered_model_alias(self.name, alias, found.version)
        if alias == "champion":
            challenger = self._alias_number("challenger")
            if challenger == str(found.version):
                self.client.delete_registered_model_alias(self.name, "challenger")
                logger.info("challenger %s became champion", version)
        pointers = self.sync()
        return Promotion(
            alias,
            before.get(alias),
            pointers[alias],
            str(found.version),
            pointers,
        )

    def clear(self, alias: str = "challenger") -> Promotion:
        """Remove ``alias`` from MLflow, then from the file registry."""
        _check_alias(alias)
        if alias == "champion":
            raise ValueError(
                "the champion cannot be removed, only replaced: promote another "
                "version to champion"
            )
        before = self.aliases()
        if self._alias_number(alias) is not None:
            self.client.delete_registered_model_alias(self.name, alias)
        pointers = self.sync()
        return Promotion(alias, before.get(alias), None, None, pointers)

    def sync(self) -> dict[str, str | None]:
        """Write MLflow's aliases into the file registry; returns its pointers."""
        wanted = self.aliases()
        for alias in registry.ALIASES:
            version = wanted.get(alias)
            if version is None:
                if alias == "champion":
                    if registry.current(self.root) is not None:
                        logger.warning(
                            "MLflow model %s has no champion alias; the file "
                            "registry keeps champion %s",
                            self.name,
                            registry.current(self.root),
                        )
                else:
                    registry.clear(self.root, alias)
                continue
            self.materialise(self.find(version))
            if registry.current(self.root, alias) != version:
                registry.promote(self.root, version, alias)
        return {alias: registry.current(self.root, alias) for alias in registry.ALIASES}

    def materialise(self, model_version) -> str:
        """The version's files in the file registry, downloaded if missing."""
        version = model_version.tags.get(VERSION_TAG) or str(model_version.version)
        if (registry.version_dir(self.root, version) / METADATA_FILE).exists():
            return version
        if not model_version.run_id:
            raise AliasError(
                f"MLflow version {model_version.version} of {self.name!r} has no "
                "run to download its files from"
            )
        with tempfile.TemporaryDirectory() as staging:
            local = self.client.download_artifacts(
                model_version.run_id, MODEL_ARTIFACT_PATH, staging
            )
            registered = registry.register(self.root, local)
        if registered != version:
            raise AliasError(
                f"MLflow version {model_version.version} is tagged {version!r} but "
                f"its model.json says {registered!r}"
            )
        logger.info("version %s downloaded from MLflow into %s", version, self.root)
        return version

    def _alias_number(self, alias: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(self.name, alias).version)
        except MlflowException:
            return None


def _check_alias(alias: str) -> None:
    if alias not in registry.ALIASES:
        raise ValueError(f"alias must be one of {registry.ALIASES}, got {alias!r}")
