"""Database URLs as they may be shown: in logs, errors, reports and exported files, never a password.

SQLAlchemy is imported inside the functions: the command line reads this module's defaults to
build its options, and ``splitsearch --help`` should not pay SQLAlchemy's import (0.3-0.7 s).
"""

from __future__ import annotations

# Optuna's storage and the store share this database unless --storage or the variable names another.
DEFAULT_STORAGE = "sqlite:///splitsearch.db"
STORAGE_ENV = "SPLITSEARCH_STORAGE"


def mask_url(url: str) -> str:
    """``postgresql+psycopg://user:secret@host/db`` -> ``postgresql+psycopg://user:***@host/db``.

    A string that is not a database URL is returned as it is (it holds no password to hide).
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def mask_password(text: str, url: str) -> str:
    """``text`` (an error message, say) with the password of ``url``, if it has one, replaced by ``***``."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        password = make_url(url).password
    except ArgumentError:
        return text
    return text.replace(str(password), "***") if password else text
