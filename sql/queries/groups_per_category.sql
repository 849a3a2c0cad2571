-- groups_per_category: how finely is each category split?
-- grain: one row per (run date, category)
select g.run_date, p.category,
       count(distinct g.product_id) as products,
       count(*) as groups,
       count(*) / count(distinct g.product_id) as groups_per_product,
       avg(g.silhouette) as mean_silhouette,
       sum(g.size) as user_rows
from gaip.groups version as of ${groups_version} g
join raw.products p on p.product_id = g.product_id
group by g.run_date, p.category
order by g.run_date, p.category
