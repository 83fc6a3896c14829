"""Unit tests reach no server: the database passwords are hidden from them.

Commands that also write PostgreSQL when they can (``promote`` updating
``model_versions``) then report that they did not, instead of writing to the
database of whoever runs the tests.
"""

from __future__ import annotations

import pytest

from txwatch.config import PostgresSettings

_PASSWORD_VARIABLES = (
    PostgresSettings.writer_password_env,
    PostgresSettings.analyst_password_env,
    PostgresSettings.admin_password_env,
)


# Module scope, so that the module-scoped fixtures of a test module (which
# run before any function-scoped one) are covered too.
@pytest.fixture(scope="module", autouse=True)
def _no_database_passwords():
    with pytest.MonkeyPatch.context() as patch:
        for variable in _PASSWORD_VARIABLES:
            patch.delenv(variable, raising=False)
        yield
