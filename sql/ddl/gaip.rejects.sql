-- gaip.rejects: generated from osmf_core/data/catalog.py by `make ddl`; do not edit by hand.
-- grain: one row per rejected input row
-- key: run_date, source, load_id, row_json
create schema if not exists gaip;
create table if not exists gaip.rejects (
  run_date date not null comment 'load run that saw the row',
  source   string not null comment 'table the row was meant for',
  load_id  string comment 'the load: a digest of the table and the input files (a rerun of one load replaces its rows); null for rows of loads older than load ids',
  reason   string not null comment 'first rule the row broke',
  row_json string not null comment 'the rejected row as JSON'
)
using delta
partitioned by (run_date, source)
location '${warehouse}/gaip/rejects'
comment 'quarantine: rows in = rows accepted + rows here';
