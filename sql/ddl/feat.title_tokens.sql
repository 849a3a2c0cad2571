-- feat.title_tokens: generated from osmf_core/data/catalog.py by `make ddl`; do not edit by hand.
-- grain: one row per (product, text encoder)
-- key: product_id, encoder
create schema if not exists feat;
create table if not exists feat.title_tokens (
  product_id bigint not null comment 'product',
  encoder    string not null comment 'text encoder that made the features',
  n_tokens   int not null comment 'tokens of the title',
  dim        int not null comment 'feature size of a token',
  features   array<float> not null comment 'max_tokens x dim token features, row-major, zero past n_tokens'
)
using delta
location '${warehouse}/feat/title_tokens'
comment 'one row per (product, text encoder)';
