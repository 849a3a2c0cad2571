-- best_creative_per_group: which creative should each group of a product see?
-- grain: one row per (product, group) of regroup run ${run_date}
-- The creative with the highest CTR in the group (gaip.group_ctr keeps only rows with enough
-- impressions); ties go to more impressions, then the smaller creative id.
select product_id, group_id, creative_id, impressions, clicks, ctr
from (
  select product_id, group_id, creative_id, impressions, clicks, ctr,
         row_number() over (partition by product_id, group_id
                            order by ctr desc, impressions desc, creative_id) as rank
  from gaip.group_ctr version as of ${group_ctr_version}
  where run_date = date '${run_date}'
)
where rank = 1
order by product_id, group_id
