"""Airflow DAG: the nightly OSMF chain for yesterday's date (ingest -> regroup -> eval-groups).

Put this file in the Airflow DAGs folder of a scheduler that can reach the gateway where OSMF is checked
out (OSMF_HOME); each task is a spark-submit through cluster/submit.sh. A rerun of a date replaces that
date's rows (the jobs are idempotent per run date), so Airflow's retries and backfills are safe.
"""
from __future__ import annotations

import datetime as dt
import os

from airflow import DAG
from airflow.operators.bash import BashOperator

OSMF_HOME = os.environ.get("OSMF_HOME", "/opt/osmf")
MODEL = os.environ.get("OSMF_PAAG_MODEL", "/shared/osmf/paag/model.pt")
SUBMIT = (f"cd {OSMF_HOME} && SPARK_MASTER=yarn SPARK_PROPERTIES=cluster/spark/yarn.properties "
          "cluster/submit.sh")

with DAG(
    dag_id="osmf_nightly",
    schedule="30 1 * * *",
    start_date=dt.datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=10)},
    tags=["osmf"],
) as dag:
    ingest = BashOperator(task_id="ingest", bash_command=f"{SUBMIT} ingest --table raw.impressions "
                          "--input /landing/impressions/{{{{ ds }}}} --run-date {{{{ ds }}}}")
    regroup = BashOperator(task_id="regroup",
                           bash_command=f"{SUBMIT} regroup --model {MODEL} --run-date {{{{ ds }}}}")
    evaluate = BashOperator(task_id="eval_groups",
                            bash_command=f"{SUBMIT} eval_groups --model {MODEL} --run-date {{{{ ds }}}}")
    ingest >> regroup >> evaluate
