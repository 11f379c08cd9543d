"""optuna-dashboard on a study's storage, served so that a database outage costs a page, not the server.

``optuna_dashboard.run_server`` would open its own storage (a pool of up to 15 connections) and
print a traceback for every request that meets a lost database.  Here the dashboard reads
through the storage splitsearch opened (at most two connections, pinged before use); a request
that meets an outage waits it out like any storage call (:mod:`splitsearch.store.retry`), for
:data:`RETRY_SECONDS`, and when the outage outlasts the wait it gets a ``503`` with the one-line
reason, which the server also logs in one line.  The server keeps serving, and answers again
once the database is back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import make_server

from splitsearch.errors import StorageUnavailableError
from splitsearch.store.retry import PatientRDBStorage

# How long a page waits for a database that went away before it answers 503: a browser does not
# wait minutes, and the dashboard polls again by itself.
RETRY_SECONDS = 10.0

_log = logging.getLogger(__name__)
Application = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def serve_dashboard(storage: PatientRDBStorage, host: str, port: int, artifact_store: Any = None) -> None:
    """Serve optuna-dashboard on ``storage`` at ``host:port`` until Ctrl-C.

    ``artifact_store`` (an Optuna ``ArtifactStore``) is where the search kept trials' weights: the
    dashboard lists them beside each trial and serves them for download.
    """
    from optuna_dashboard import wsgi

    application = storage_faults_answered(wsgi(storage, artifact_store=artifact_store))
    with make_server(host, port, application) as server:
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


def storage_faults_answered(application: Application) -> Application:
    """``application`` whose requests answer ``503 Service Unavailable`` when the storage stays away."""
    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        try:
            return application(environ, start_response)
        except StorageUnavailableError as error:
            _log.warning(str(error))
            start_response("503 Service Unavailable", [("Content-Type", "text/plain; charset=utf-8")])
            return [str(error).encode()]

    return guarded

