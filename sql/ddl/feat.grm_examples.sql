-- feat.grm_examples: generated from osmf_core/data/catalog.py by `make ddl`; do not edit by hand.
-- grain: one row per (run date, product, group, creative pair)
-- key: run_date, product_id, group_id, creative_a, creative_b
create schema if not exists feat;
create table if not exists feat.grm_examples (
  run_date       date not null comment 'regroup run the pairs come from',
  split          string not null comment 'train or test (held-out products)',
  product_id     bigint not null comment 'product',
  group_id       int not null comment 'group',
  creative_a     bigint not null comment 'first creative',
  creative_b     bigint not null comment 'second creative',
  title          string not null comment 'product title',
  image_a        binary not null comment 'PNG of creative_a',
  image_b        binary not null comment 'PNG of creative_b',
  group_features array<float> not null comment 'centroid and percentile points of the group, flattened',
  group_dim      int not null comment 'size of one group vector',
  label          int not null comment '1 if creative_a has the higher CTR in the group'
)
using delta
partitioned by (run_date, split)
location '${warehouse}/feat/grm_examples'
comment 'GRM rows: gaip.pairs with the two images and the group features, read through petastorm';
