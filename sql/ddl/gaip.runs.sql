-- gaip.runs: generated from osmf_core/data/catalog.py by `make ddl`; do not edit by hand.
-- grain: one row per published run
-- key: run_id
create schema if not exists gaip;
create table if not exists gaip.runs (
  run_id       string not null comment 'unique id of the run (run date and commit time)',
  run_date     date not null comment 'run date the run wrote',
  stage        string not null comment 'job that published it: regroup',
  status       string not null comment 'complete: every table of the run is committed',
  committed_at timestamp not null comment 'when the run was published (UTC)',
  versions     map<string,bigint> not null comment 'Delta version of each table of the run once it was written, by table name'
)
using delta
location '${warehouse}/gaip/runs'
comment 'run ledger: a run is visible once its row is here; readers of the latest run read its tables at the versions of the newest row';
