-- feat.image_patches: generated from osmf_core/data/catalog.py by `make ddl`; do not edit by hand.
-- grain: one row per (creative, image encoder)
-- key: creative_id, encoder
create schema if not exists feat;
create table if not exists feat.image_patches (
  creative_id bigint not null comment 'creative',
  encoder     string not null comment 'image encoder that made the features',
  n_patches   int not null comment 'patches of the image',
  dim         int not null comment 'feature size of a patch',
  features    array<float> not null comment 'n_patches x dim patch features, row-major'
)
using delta
location '${warehouse}/feat/image_patches'
comment 'one row per (creative, image encoder)';
