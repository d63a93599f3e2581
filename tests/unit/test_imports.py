"""Import boundaries: ``ipcluster`` never pulls in the controller, the engines or IPython.

Each check runs in a fresh interpreter (``sys.modules`` of the test process is already polluted).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ipcluster

pytestmark = pytest.mark.timeout(30)

ROOT = Path(ipcluster.__file__).resolve().parents[1]

PROBE = """
import json, sys
{imports}
import ipcluster
forbidden = {forbidden!r}
print(json.dumps({{
    "file": ipcluster.__file__,
    "loaded": sorted(m for m in sys.modules if any(m == f or m.startswith(f + ".") for f in forbidden)),
}}))
"""


def loaded_after(imports: str, forbidden: list[str]) -> list[str]:
    """Modules among *forbidden* (or their submodules) present after running *imports*."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("PYTHONSTARTUP", None)
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(imports=imports, forbidden=forbidden)],
        capture_output=True, text=True, timeout=20, env=env, cwd=ROOT,
    )
    assert proc.returncode == 0, f"probe failed:\n{proc.stdout}\n{proc.stderr}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(result["file"]).resolve() == Path(ipcluster.__file__).resolve()
    return result["loaded"]


def test_import_ipcluster_is_lean():
    loaded = loaded_after("import ipcluster", ["IPython", "controller", "engines", "zmq"])
    assert loaded == []


def test_import_ipcluster_does_not_load_client_or_cluster_eagerly():
    loaded = loaded_after("import ipcluster", ["ipcluster.client", "ipcluster.cluster"])
    assert loaded == []


def test_error_names_do_not_load_the_rest():
    imports = "import ipcluster\nipcluster.RemoteError, ipcluster.CompositeError, ipcluster.TimeoutError"
    loaded = loaded_after(imports, ["IPython", "controller", "engines", "zmq", "ipcluster.client", "ipcluster.cluster"])
    assert loaded == []


def test_session_does_not_import_ipython():
    loaded = loaded_after("import ipcluster.protocol.session", ["IPython", "controller", "engines"])
    assert loaded == []


def test_protocol_layer_does_not_import_ipython_controller_or_engines():
    imports = "\n".join(
        f"import ipcluster.protocol.{m}" for m in ("session", "serialize", "connection", "messages", "versions")
    )
    loaded = loaded_after(imports, ["IPython", "controller", "engines"])
    assert loaded == []


def test_probe_detects_imports():
    # control: the probe does see packages and submodules that were imported
    assert "cloudpickle" in loaded_after("import ipcluster.protocol.serialize", ["cloudpickle"])
    assert loaded_after("import ipcluster.protocol.session", ["ipcluster.protocol"]) == [
        "ipcluster.protocol", "ipcluster.protocol.session",
    ]
    assert loaded_after("import ipcluster", ["cloudpickle"]) == []
