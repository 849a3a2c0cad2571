-- feat.product_pairs: generated from osmf_core/data/catalog.py by `make ddl`; do not edit by hand.
-- grain: one row per (run date, product, creative pair)
-- key: run_date, product_id, creative_a, creative_b
create schema if not exists feat;
create table if not exists feat.product_pairs (
  run_date       date not null comment 'regroup run whose log window the CTRs come from',
  split          string not null comment 'train or test (held-out products, features.split)',
  product_id     bigint not null comment 'product',
  group_id       int not null comment '-1: the product''s whole audience, no group',
  creative_a     bigint not null comment 'first creative',
  creative_b     bigint not null comment 'second creative',
  title          string not null comment 'product title',
  image_a        binary not null comment 'PNG of creative_a',
  image_b        binary not null comment 'PNG of creative_b',
  group_features array<float> not null comment 'empty: no group',
  group_dim      int not null comment '0: no group',
  label          int not null comment '1 if creative_a has the higher CTR among all the product''s viewers'
)
using delta
partitioned by (run_date, split)
location '${warehouse}/feat/product_pairs'
comment 'the one-size reward model''s rows, as CAIG''s: creative pairs by CTR over the product''s whole audience';
