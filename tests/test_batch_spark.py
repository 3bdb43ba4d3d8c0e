"""The Spark engine gives the local engine's outputs byte for byte (local[2]; skipped without pyspark or
Java)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from batch_helpers import BATCH, batch, outputs, rows, summary, write_ndjson
from conftest import metformin_request, patient
from held_batch import children, start_held, wait_gone
from test_bundle_isolation import HOSTILE_AT, REASON, bundle_bytes, hostile_observation

from b12screen import Screener
from b12screen.plugins import get_plugin_manager


def _java() -> bool:
    java = shutil.which("java")
    if java is None:
        return False
    return subprocess.run([java, "-version"], capture_output=True, timeout=60).returncode == 0


pytestmark = pytest.mark.skipif(importlib.util.find_spec("pyspark") is None or not _java(),
                                reason="pyspark or Java not installed")


@pytest.mark.slow
def test_spark_outputs_match_the_local_engine(tmp_path: Path) -> None:
    export = tmp_path / "export"
    shutil.copytree(BATCH / "export", export)
    write_ndjson(export / "MedicationRequest.002.ndjson", [metformin_request(f"r{i}", f"s{i % 7}", "2016-01-01")
                                                          for i in range(60)] + ["{broken"])
    write_ndjson(export / "Patient.002.ndjson.gz", [patient(f"s{i}", f"19{45 + i}-01-01") for i in range(7)], gz=True)
    # Executors rebuild the Screener from installed plugins: the local run uses the same ones.
    screener = Screener(plugin_manager=get_plugin_manager())
    bundles = tmp_path / "bundles"
    shutil.copytree(BATCH / "bundles", bundles)
    (bundles / "hostile.json").write_bytes(bundle_bytes(hostile_observation()))  # one entry 603 levels deep
    paths = [export, bundles]
    local = batch(screener, paths, tmp_path / "local", workers=2, unit_bytes=2000)
    spark = batch(screener, paths, tmp_path / "spark", engine="spark", spark_master="local[2]", unit_bytes=2000,
                  screener_spec={"profile": "default", "config": None, "strict": False})
    assert local.exit_code == spark.exit_code == 1
    assert outputs(tmp_path / "spark") == outputs(tmp_path / "local")
    assert summary(tmp_path / "spark") == summary(tmp_path / "local")
    assert summary(tmp_path / "local")["patients"] == 14
    hostile = [e for e in rows(tmp_path / "spark" / "errors.ndjson") if e["file"].endswith("hostile.json")]
    assert [(e["location"], e["reason"]) for e in hostile] == [(f"entry[{HOSTILE_AT}]", REASON)]
    assert "Patient/a" in {r["patient"] for r in rows(tmp_path / "spark" / "report.ndjson")}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX signals, /proc")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.slow
def test_an_interrupted_spark_batch_ends_its_jobs_and_leaves_nothing(tmp_path: Path, signum: int) -> None:
    # slow (20-40 s: a JVM starts), bounded by the waits below
    proc, held, out = start_held(tmp_path, "screen", "--engine", "spark", "--spark-master", "local[1]",
                                 bound=180)  # held in a Spark Python worker, screening
    jvm = children(proc.pid)
    if signum == signal.SIGINT:  # as a terminal's Ctrl-C: the whole group (pyspark's JVM ignores it)
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, stderr
    assert stderr.endswith(f"b12screen: interrupted by {signal.Signals(signum).name}: the batch stopped; its "
                           "workers, work folder and temporary files were removed\n")
    assert "Traceback" not in stderr and "Exception" not in stderr  # neither py4j's nor the JVM's
    assert list(out.iterdir()) == []
    assert wait_gone([*jvm, held]) == [], "Spark's JVM or Python worker outlived the batch"
