-- gen.prompts: generated from osmf_core/data/catalog.py by `make ddl`; do not edit by hand.
-- grain: one row per (run date, product, group, model version, prompt index)
-- key: run_date, product_id, group_id, model_version, prompt_idx
create schema if not exists gen;
create table if not exists gen.prompts (
  run_date      date not null comment 'generation run',
  product_id    bigint not null comment 'product',
  group_id      int not null comment 'group the prompt targets',
  model_version string not null comment 'G-MLLM version that wrote it',
  prompt_idx    int not null comment 'index among the prompts sampled for this (product, group)',
  prompt        string not null comment 'background prompt'
)
using delta
partitioned by (run_date)
location '${warehouse}/gen/prompts'
comment 'one row per (run date, product, group, model version, prompt index)';
