-- gaip.user_groups: generated from osmf_core/data/catalog.py by `make ddl`; do not edit by hand.
-- grain: one row per (run date, product, user)
-- key: run_date, product_id, user_id
create schema if not exists gaip;
create table if not exists gaip.user_groups (
  run_date   date not null comment 'regroup run',
  product_id bigint not null comment 'product',
  user_id    bigint not null comment 'user',
  group_id   int not null comment 'assigned group'
)
using delta
partitioned by (run_date)
location '${warehouse}/gaip/user_groups'
comment 'one row per (run date, product, user)';
