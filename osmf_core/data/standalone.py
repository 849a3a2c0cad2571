"""A Spark standalone cluster on this host (one master, N workers), from the launcher pyspark ships.

    with standalone_cluster(workers=2, work_dir="/tmp/sc") as master:   # spark://127.0.0.1:<port>
        subprocess.run([python, "jobs/regroup.py", "--master", master, ...])

Used by the slow tests to run the jobs the way a cluster runs them: separate executor JVMs and Python
workers that read the warehouse through its paths, not through the driver.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spark_class() -> str:
    import pyspark
    return str(Path(pyspark.__file__).parent / "bin" / "spark-class")


@contextlib.contextmanager
def standalone_cluster(workers: int = 2, cores: int = 1, memory: str = "1g", work_dir: str = "standalone",
                       timeout: float = 120.0):
    """Start a master and `workers` workers on 127.0.0.1; yield the master URL; stop them all."""
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    port, ui = _free_port(), _free_port()
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOG_DIR": str(work), "SPARK_WORKER_DIR": str(work)}
    procs = []

    def start(name: str, args: list[str]):
        log = open(work / f"{name}.log", "w")
        procs.append((subprocess.Popen([_spark_class(), *args], stdout=log, stderr=subprocess.STDOUT, env=env), log))

    try:
        start("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                         "--webui-port", str(ui)])
        master = f"spark://127.0.0.1:{port}"
        for i in range(workers):
            start(f"worker{i}", ["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", str(cores),
                                 "--memory", memory, "--webui-port", str(_free_port()),
                                 "--work-dir", str(work / f"worker{i}"), master])
        deadline = time.time() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=2) as r:
                    if json.load(r).get("aliveworkers", 0) >= workers:
                        break
            except OSError:
                pass
            for p, _ in procs:
                if p.poll() is not None:
                    raise RuntimeError(f"a Spark daemon exited early; see the logs in {work}")
            if time.time() > deadline:
                raise TimeoutError(f"{workers} workers did not register with {master} in {timeout:.0f}s; logs in {work}")
            time.sleep(1.0)
        yield master
    finally:
        for p, log in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
            log.close()
