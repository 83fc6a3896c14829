"""``model_versions`` follows the registry through ``txwatch promote``."""

from __future__ import annotations

import conftest_db
import pytest
import yaml
from model_factory import make_model

from txwatch.cli import main as cli
from txwatch.config import DEFAULT_CONFIG
from udfs import registry
from udfs.scoring import ModelMetadata

pytestmark = pytest.mark.integration

pg_admin = conftest_db.pg_admin
throwaway_db = conftest_db.throwaway_db
migrated_db = conftest_db.migrated_db


def _table(pg_admin, database) -> dict:
    conn = pg_admin.connect(database)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT version, alias, threshold, registered_at, notes"
                " FROM model_versions"
            )
            return {row[0]: row[1:] for row in cur.fetchall()}
    finally:
        conn.close()


def test_promotions_rewrite_the_aliases_and_keep_each_version(
    pg_admin, migrated_db, tmp_path, capsys
):
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["postgres"]["database"] = migrated_db.database
    config = tmp_path / "txwatch.yaml"
    config.write_text(yaml.safe_dump(raw))
    root = tmp_path / "registry"
    for seed in (1, 2):
        registry.register(root, make_model(tmp_path / f"model{seed}", seed))
    common = ["--file-only", "--registry", str(root)]

    def promote(*args: str) -> int:
        return cli(["--config", str(config), "promote", *args, *common])

    assert promote("m1") == 0
    first = _table(pg_admin, migrated_db.database)
    assert {v: row[0] for v, row in first.items()} == {"m1": "champion", "m2": None}
    for version in ("m1", "m2"):
        meta = ModelMetadata.read(registry.version_dir(root, version) / "model.json")
        assert first[version][1] == pytest.approx(meta.threshold)
        assert "Isolation Forest, 25 trees" in first[version][3]
    assert "model_versions: 2 versions (champion m1)" in capsys.readouterr().out

    assert promote("m2", "--alias", "challenger") == 0
    assert {v: row[0] for v, row in _table(pg_admin, migrated_db.database).items()} == {
        "m1": "champion",
        "m2": "challenger",
    }

    assert promote("m2") == 0
    assert promote("--clear", "--alias", "challenger") == 0
    last = _table(pg_admin, migrated_db.database)
    assert {v: row[0] for v, row in last.items()} == {"m1": None, "m2": "champion"}
    # a row is registered once: later promotions change its alias only
    assert {v: row[2] for v, row in last.items()} == {
        v: row[2] for v, row in first.items()
    }
