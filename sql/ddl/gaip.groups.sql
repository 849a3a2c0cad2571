-- gaip.groups: generated from osmf_core/data/catalog.py by `make ddl`; do not edit by hand.
-- grain: one row per (run date, product, group)
-- key: run_date, product_id, group_id
create schema if not exists gaip;
create table if not exists gaip.groups (
  run_date    date not null comment 'regroup run',
  product_id  bigint not null comment 'product',
  group_id    int not null comment 'group within the product, 0..k_star-1',
  k_star      int not null comment 'number of groups chosen by silhouette',
  silhouette  double not null comment 'mean silhouette coefficient at k_star',
  size        bigint not null comment 'users in the group',
  centroid    array<float> not null comment 'group centroid of e_u|t',
  points      array<array<float>> not null comment 'percentile points, one per entry of the percentile set',
  percentiles array<int> not null comment 'the percentile set used'
)
using delta
partitioned by (run_date)
location '${warehouse}/gaip/groups'
comment 'one row per (run date, product, group)';
