"""Loading the YAML settings: unknown keys refused, retired keys tolerated."""

from __future__ import annotations

import logging

import pytest
import yaml

from txwatch.config import DEFAULT_CONFIG, ConfigError, load


def _config(tmp_path, **job):
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["job"].update(job)
    path = tmp_path / "txwatch.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_shipped_configuration_loads():
    settings = load()
    assert settings.job.max_out_of_orderness_ms == 5_000


def test_a_misspelt_key_is_refused_with_the_known_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"job: unknown keys \['bundel_size'\]"):
        load(_config(tmp_path, bundel_size=10))


def test_a_key_of_an_earlier_release_is_ignored_with_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="txwatch.config"):
        settings = load(_config(tmp_path, idle_source_timeout_ms=10_000))

    assert settings.job == load().job
    assert "job.idle_source_timeout_ms is ignored" in caplog.text


def test_the_state_backend_is_heap_unless_rocksdb_is_chosen(tmp_path):
    assert load().job.state_backend == "hashmap"
    assert load(_config(tmp_path, state_backend="rocksdb")).job.state_backend == (
        "rocksdb"
    )
    with pytest.raises(ConfigError, match="job.state_backend must be one of"):
        load(_config(tmp_path, state_backend="memory"))
