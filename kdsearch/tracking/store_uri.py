"""Where MLflow's store is, without importing MLflow (the pipeline's cheap checks run before it loads): the
default URI, the URI's check, and how a user opens the runs."""
import os
from pathlib import Path

from kdsearch.core.errors import UserError, first_line


def default_uri(results):
    return f"sqlite:///{Path(results).resolve() / 'mlflow.db'}"


def check_uri(uri, file):
    """A quick look at the tracking URI before anything is created: a server must answer within 5 s (MLflow's
    client would retry for minutes), an sqlite or file store must lie in a writable folder."""
    import urllib.request
    fix = f"fix: start the server, or correct tracking.uri in {file}"
    if uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5).close()
        except Exception as e:
            raise UserError(f"{file}: tracking.uri {uri}: the MLflow server does not answer ({first_line(e, 120)}); "
                            f"{fix}") from None
    elif uri.startswith(("sqlite:///", "file:")) or "://" not in uri:
        path = Path(uri.split("sqlite:///", 1)[1] if uri.startswith("sqlite:///") else uri.split("file:", 1)[-1])
        folder = next(p for p in [path.parent, *path.parent.parents] if p.exists())
        if not os.access(folder, os.W_OK):
            raise UserError(f"{file}: tracking.uri {uri}: {folder} is not writable; {fix}")
    elif uri.split("://")[0] not in ("sqlite", "postgresql", "mysql", "mssql", "databricks"):
        raise UserError(f"{file}: tracking.uri {uri}: unknown scheme {uri.split('://')[0]!r} (use http(s)://, "
                        f"sqlite:///, file: or a database URI); {fix}")


def ui_command(uri, experiment_id):
    """How to look at the runs: start the UI on a local store (or use the server) and open the experiment's runs
    table. The link names the workflow: MLflow 3.17's UI, whose sidebar switch is on by default, opens its GenAI
    overview otherwise, whatever the experiment's kind tag says (seen in a headless Chromium)."""
    local = not uri.startswith(("http://", "https://"))  # a file or database store: `mlflow ui` serves it
    base = "http://127.0.0.1:5000" if local else uri.rstrip("/")
    url = f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    return f"mlflow ui --backend-store-uri {uri}, then open {url}" if local else f"open {url}"
