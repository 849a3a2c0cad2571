-- raw.creatives: generated from osmf_core/data/catalog.py by `make ddl`; do not edit by hand.
-- grain: one row per creative
-- key: creative_id
create schema if not exists raw;
create table if not exists raw.creatives (
  creative_id bigint not null comment 'creative id',
  product_id  bigint not null comment 'the product shown',
  prompt      string not null comment 'background prompt the creative was made from',
  image       binary not null comment 'advertising image, PNG RGB'
)
using delta
location '${warehouse}/raw/creatives'
comment 'one row per creative';
