-- gaip.group_ctr: generated from osmf_core/data/catalog.py by `make ddl`; do not edit by hand.
-- grain: one row per (run date, product, creative, group)
-- key: run_date, product_id, creative_id, group_id
create schema if not exists gaip;
create table if not exists gaip.group_ctr (
  run_date    date not null comment 'regroup run',
  product_id  bigint not null comment 'product',
  creative_id bigint not null comment 'creative',
  group_id    int not null comment 'group',
  impressions bigint not null comment 'impressions of the creative in the group',
  clicks      bigint not null comment 'clicks of the creative in the group',
  ctr         double not null comment 'clicks / impressions'
)
using delta
partitioned by (run_date)
location '${warehouse}/gaip/group_ctr'
comment 'one row per (run date, product, creative, group)';
