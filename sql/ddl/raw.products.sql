-- raw.products: generated from osmf_core/data/catalog.py by `make ddl`; do not edit by hand.
-- grain: one row per product
-- key: product_id
create schema if not exists raw;
create table if not exists raw.products (
  product_id bigint not null comment 'product id',
  category   string not null comment 'product category',
  title      string not null comment 'product title',
  image      binary not null comment 'product cutout, PNG RGB',
  mask       binary not null comment 'alpha mask of the product, PNG L (255 = product)'
)
using delta
location '${warehouse}/raw/products'
comment 'one row per product';
