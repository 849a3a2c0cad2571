-- ctr_spread_between_groups: where do groups disagree most about a creative?
-- grain: one row per (product, creative) of regroup run ${run_date}; the ${top_n} largest spreads
-- spread = highest - lowest group CTR of the creative, over the groups that saw it enough
-- (gaip.group_ctr's exposure filter); ties by product and creative id.
select product_id, creative_id,
       count(*) as groups,
       min(ctr) as min_ctr,
       max(ctr) as max_ctr,
       max(ctr) - min(ctr) as spread
from gaip.group_ctr version as of ${group_ctr_version}
where run_date = date '${run_date}'
group by product_id, creative_id
having count(*) >= 2
order by spread desc, product_id, creative_id
limit ${top_n}
