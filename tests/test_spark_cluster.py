"""A real Spark standalone cluster on loopback (a master and two workers started with pyspark's own
``bin/spark-class``): ``batch --engine spark --spark-master spark://127.0.0.1:PORT`` writes the local
engine's outputs byte for byte. Skipped without pyspark or Java."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from batch_helpers import BATCH, batch, outputs, summary, write_ndjson
from conftest import metformin_request, patient
from test_batch_spark import _java

from b12screen import Screener
from b12screen.plugins import get_plugin_manager

pytestmark = pytest.mark.skipif(importlib.util.find_spec("pyspark") is None or not _java(),
                                reason="pyspark or Java not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise AssertionError(f"Spark master did not listen on 127.0.0.1:{port}")


@pytest.fixture
def spark_cluster(tmp_path: Path) -> Iterator[str]:
    import pyspark

    home = Path(pyspark.__file__).parent
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_MASTER_HOST": "127.0.0.1",
           "PYSPARK_PYTHON": sys.executable, "SPARK_LOG_DIR": str(tmp_path / "logs"),
           "SPARK_WORKER_DIR": str(tmp_path / "work")}
    port = _free_port()
    master = f"spark://127.0.0.1:{port}"
    spark_class = str(home / "bin" / "spark-class")
    procs = []
    log = open(tmp_path / "cluster.log", "wb")  # noqa: SIM115 - closed at teardown
    try:
        procs.append(subprocess.Popen(
            [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
             "--webui-port", str(_free_port())], env=env, stdout=log, stderr=log, start_new_session=True))
        _wait_for_port(port, time.monotonic() + 90)
        for _ in range(2):
            procs.append(subprocess.Popen(
                [spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", "1",
                 "--memory", "1g", "--webui-port", str(_free_port()), master],
                env=env, stdout=log, stderr=log, start_new_session=True))
        deadline = time.monotonic() + 90
        while (tmp_path / "cluster.log").read_text(errors="replace").count("Registering worker") < 2:
            assert time.monotonic() < deadline, (tmp_path / "cluster.log").read_text(errors="replace")[-2000:]
            time.sleep(0.3)
        yield master
    finally:
        for proc in reversed(procs):
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.mark.slow
def test_standalone_cluster_outputs_match_the_local_engine(spark_cluster: str, tmp_path: Path) -> None:
    export = tmp_path / "export"
    shutil.copytree(BATCH / "export", export)
    write_ndjson(export / "MedicationRequest.002.ndjson", [metformin_request(f"r{i}", f"s{i % 7}", "2016-01-01")
                                                          for i in range(40)] + ["{broken"])
    write_ndjson(export / "Patient.002.ndjson", [patient(f"s{i}", f"19{45 + i}-01-01") for i in range(7)])
    screener = Screener(plugin_manager=get_plugin_manager())
    paths = [export, BATCH / "bundles"]
    local = batch(screener, paths, tmp_path / "local", workers=2, unit_bytes=2000)
    spark = batch(screener, paths, tmp_path / "spark", engine="spark", spark_master=spark_cluster, unit_bytes=2000,
                  spark_conf={"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1",
                              "spark.executor.memory": "512m", "spark.cores.max": "2"},
                  screener_spec={"profile": "default", "config": None, "strict": False})
    assert local.exit_code == spark.exit_code == 1
    assert outputs(tmp_path / "spark") == outputs(tmp_path / "local")
    assert summary(tmp_path / "spark") == summary(tmp_path / "local")
    assert spark.summary["run"]["spark_master"] == spark_cluster and spark.summary["patients"] == 13
