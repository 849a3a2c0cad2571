-- gaip.metrics: generated from osmf_core/data/catalog.py by `make ddl`; do not edit by hand.
-- grain: one row per (run date, stage, metric)
-- key: run_date, stage, name
create schema if not exists gaip;
create table if not exists gaip.metrics (
  run_date date not null comment 'run the metric belongs to',
  stage    string not null comment 'pipeline stage that measured it',
  name     string not null comment 'metric name',
  value    double not null comment 'metric value'
)
using delta
partitioned by (run_date)
location '${warehouse}/gaip/metrics'
comment 'one row per (run date, stage, metric)';
