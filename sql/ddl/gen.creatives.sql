-- gen.creatives: generated from osmf_core/data/catalog.py by `make ddl`; do not edit by hand.
-- grain: one row per (run date, product, group, model version)
-- key: run_date, product_id, group_id, model_version
create schema if not exists gen;
create table if not exists gen.creatives (
  run_date      date not null comment 'generation run',
  product_id    bigint not null comment 'product',
  group_id      int not null comment 'group the image is for',
  model_version string not null comment 'G-MLLM version',
  prompt        string not null comment 'prompt the image was rendered from',
  image_path    string not null comment 'rendered image file',
  grm_score     double comment 'GRM: mean P(this image beats each logged creative of the product) in the group',
  sim_ctr       double comment 'simulated expected CTR in the group'
)
using delta
partitioned by (run_date)
location '${warehouse}/gen/creatives'
comment 'one row per (run date, product, group, model version)';
