-- feat.instructions: generated from osmf_core/data/catalog.py by `make ddl`; do not edit by hand.
-- grain: one row per (run date, task, product, group, example)
-- key: run_date, task, product_id, group_id, example
create schema if not exists feat;
create table if not exists feat.instructions (
  run_date       date not null comment 'regroup run the groups come from',
  task           string not null comment 'group_analysis, behavioral_prediction, product_understanding, prompt_generation, creative_captioning',
  template       int not null comment 'index of the Table 5 template used',
  product_id     bigint not null comment 'product',
  group_id       int not null comment 'group the row is about, -1 = none (no group token)',
  example        int not null comment 'index among the rows of this (task, product, group)',
  instruction    string not null comment 'prompt text with <group> and <image> placeholders',
  response       string not null comment 'target text',
  image          binary not null comment 'PNG shown at <image>, empty when the instruction has none',
  group_features array<float> not null comment 'centroid and percentile points of the group, flattened; empty for none',
  group_dim      int not null comment 'size of one group vector (0 when none)',
  split          string not null comment 'train, or test: a held-out product, read by no training stream (features.split)'
)
using delta
partitioned by (run_date, split)
location '${warehouse}/feat/instructions'
comment 'instruction data of the four G-MLLM pre-training tasks (paper Table 5)';
