-- gaip.pairs: generated from osmf_core/data/catalog.py by `make ddl`; do not edit by hand.
-- grain: one row per (run date, product, group, creative pair)
-- key: run_date, product_id, group_id, creative_a, creative_b
create schema if not exists gaip;
create table if not exists gaip.pairs (
  run_date   date not null comment 'regroup run',
  product_id bigint not null comment 'product',
  group_id   int not null comment 'group',
  creative_a bigint not null comment 'first creative',
  creative_b bigint not null comment 'second creative',
  ctr_a      double not null comment 'group CTR of creative_a',
  ctr_b      double not null comment 'group CTR of creative_b',
  label      int not null comment '1 if ctr_a > ctr_b else 0'
)
using delta
partitioned by (run_date)
location '${warehouse}/gaip/pairs'
comment 'one row per (run date, product, group, creative pair)';
