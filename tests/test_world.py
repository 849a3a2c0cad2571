"""The simulated world as pure numpy: users, categories, styles, clicks, images (no Spark)."""
import numpy as np
import pytest

from osmf_core.world import images
from osmf_core.world import model as world
from osmf_core.world import styles
from osmf_core.data.catalog import USER_ATTRIBUTES
from osmf_core.world.truth import Truth
from osmf_core.world.model import CATEGORIES, WorldSize, WorldSpec
from osmf_core.world.styles import DIMS, STYLE_DIMS


@pytest.fixture(scope="module")
def users():
    return world.sample_users(3, 0, 5_000)


def test_same_seed_same_users_and_other_seed_other_users(users):
    again = world.sample_users(3, 0, 5_000)
    other = world.sample_users(4, 0, 5_000)
    for a in world.ATTRS:
        np.testing.assert_array_equal(users[a], again[a])
    assert any((users[a] != other[a]).any() for a in world.ATTRS)


def test_last_block_is_cut_at_the_world_size():
    last = world.sample_users(3, 1, 7_000)
    assert len(last["user_id"]) == 2_000 and last["user_id"][0] == world.USER_BLOCK
    assert world.n_user_blocks(7_000) == 2


def test_attributes_cover_their_table_4_codes(users):
    for a, (card, _) in USER_ATTRIBUTES.items():
        v = users[a]
        assert v.min() >= 0 and v.max() < card, a
        assert len(np.unique(v)) >= min(card, 2), a
    assert len(np.unique(users["age"])) == 13 and len(np.unique(users["color"])) == 15
    assert len(np.unique(users["profession"])) == 11 and len(np.unique(users["child_age"])) == 10


def test_attributes_are_correlated_as_people_are(users):
    corr = lambda a, b: np.corrcoef(users[a], users[b])[0, 1]  # noqa: E731
    assert corr("age", "marriage") > 0.3
    assert corr("age", "child_age") > 0.3
    assert corr("purchase_power", "resident_city_level") > 0.3  # lower power in lower tiers
    assert corr("purchase_power", "is_vip") < -0.15
    kids = users["child_age"] > 0
    assert (users["marriage"][kids] == 2).mean() > 0.8


def test_categories_split_users_along_different_attributes():
    assert len(CATEGORIES) >= 12
    attrs = {a for a, _ in CATEGORIES.values()}
    assert len(attrs) >= 10 and {"gender", "age"} <= attrs
    spec = WorldSpec.from_seed(0)
    assert ((spec.n_segments >= 2) & (spec.n_segments <= 5)).all()


def test_segment_depends_on_the_split_attribute_only(users):
    phone = np.full(len(users["user_id"]), world.CATEGORY_NAMES.index("smartphone"))
    seg = world.segment_of(phone, users)
    np.testing.assert_array_equal(seg, users["gender"])
    older = dict(users, age=np.full_like(users["age"], 12))
    np.testing.assert_array_equal(world.segment_of(phone, older), seg)
    shoes = np.full(len(users["user_id"]), world.CATEGORY_NAMES.index("shoes"))
    assert not np.array_equal(world.segment_of(shoes, older), world.segment_of(shoes, users))


def test_segments_of_a_category_want_conflicting_styles():
    truth = Truth(seed=5, n_products=14)
    for c in range(len(CATEGORIES)):
        n = truth.n_segments(c)
        best = [truth.best_style(c, s) for s in range(n)]
        for s in range(n):
            own = world.style_utility(truth.spec, c, s, best[s])
            for o in range(n):
                if o != s:
                    assert (best[s] != best[o]).all(), "favourites differ on every dimension"
                    assert own - world.style_utility(truth.spec, c, s, best[o]) > 1.0


def test_prompts_and_styles_round_trip():
    terms = [t for ts in STYLE_DIMS.values() for t in ts]
    for a in terms:
        assert sum(a in b for b in terms) == 1, f"{a!r} is part of another term"
    rng = np.random.default_rng(0)
    for _ in range(200):
        style = np.array([rng.integers(0, len(STYLE_DIMS[d])) for d in DIMS])
        np.testing.assert_array_equal(styles.parse_style(styles.style_prompt(style, "Nova Pro Watch 3")), style)
    np.testing.assert_array_equal(styles.parse_style("a watch on a Beach at golden hour"),
                                  [STYLE_DIMS["scene"].index("beach"), -1, STYLE_DIMS["lighting"].index("golden hour"), -1])


def test_overall_ctr_is_about_one_to_two_percent():
    size = WorldSize(users=5_000, products=140)
    spec, table = WorldSpec.from_seed(2), world.ProductTable.build(2, 140)
    imp = world.sample_impressions(2, 0, size, spec, table)
    assert 0.01 <= imp["clicked"].mean() <= 0.02
    assert len(np.unique(imp["impression_id"])) == len(imp["impression_id"])
    n_cre = table.n_creatives[imp["creative_id"] // world.CREATIVE_STRIDE]
    assert ((imp["creative_id"] % world.CREATIVE_STRIDE) < n_cre).all()
    assert 3 <= table.n_creatives.min() and table.n_creatives.max() <= 20


def test_expected_ctr_of_a_prompt_follows_the_segment():
    truth = Truth(seed=5, n_products=14)
    users = world.sample_users(5, 0, 5_000)
    pid = world.CATEGORY_NAMES.index("smartphone")  # product 0..13 has category == product id
    women = {k: v[users["gender"] == 0] for k, v in users.items()}
    men = {k: v[users["gender"] == 1] for k, v in users.items()}
    for_women = styles.style_prompt(truth.best_style(pid, 0))
    for_men = styles.style_prompt(truth.best_style(pid, 1))
    assert truth.expected_ctr(for_women, pid, women) > 1.5 * truth.expected_ctr(for_men, pid, women)
    assert truth.expected_ctr(for_men, pid, men) > 1.5 * truth.expected_ctr(for_women, pid, men)
    vague = truth.expected_ctr("the product", pid, women)  # no style named: the segment's average taste
    assert truth.expected_ctr(for_men, pid, women) < vague < truth.expected_ctr(for_women, pid, women)


def test_the_style_is_visible_in_pixels():
    rng = np.random.default_rng(0)
    warm = images.background(np.array([0, 0, 0, 0]), 32, rng)  # studio, warm, soft daylight, minimal
    cool = images.background(np.array([0, 1, 0, 0]), 32, rng)  # same, cool palette
    assert warm[..., 0].mean() - warm[..., 2].mean() > 50 and cool[..., 2].mean() - cool[..., 0].mean() > 50
    spot = images.background(np.array([0, 0, 2, 0]), 32, rng)
    assert spot[16, 16].mean() > spot[0, 0].mean() + 40  # a spotlight is bright in the middle
    rgb, mask = images.product_cutout(0, 3, 32)
    assert 0.05 < mask.mean() < 0.5
    img = images.composite(warm, rgb, mask)
    np.testing.assert_allclose(img[mask == 1], rgb[mask == 1])
    np.testing.assert_allclose(img[mask == 0], warm[mask == 0])
    back = images.from_png(images.to_png(img))
    assert back.shape == (32, 32, 3) and np.abs(back - np.rint(img)).max() <= 1


def test_rung_logits_split_the_true_logit_into_what_each_rung_can_represent():
    truth = Truth(seed=5, n_products=14)
    users = world.sample_users(5, 0, 3_000)
    rng = np.random.default_rng(0)
    pid = 0  # one product: its own rows alone set the segment shares
    creatives = pid * world.CREATIVE_STRIDE + rng.integers(0, truth.products.n_creatives[pid], 3_000)
    ref = truth.rung_logits(users, creatives)
    cat = np.full(3_000, truth.products.category[pid])
    np.testing.assert_allclose(ref["full"], world.click_logit(
        truth.spec, users, cat, np.full(3_000, truth.products.bias[pid]), truth.creative_style(creatives)))
    np.testing.assert_allclose(ref["I+U"] - ref["I"], world.user_propensity(users))
    np.testing.assert_array_equal(ref["I+U+T"], ref["I+U"])
    ut = ref["I+U+T+UT"] - ref["I+U"]  # the segment's mean taste for the product's creatives, centred
    seg = truth.segment(pid, users)
    assert abs(ut.mean()) < 1e-12 and len(np.unique(ut.round(12))) == len(np.unique(seg)) == 2
    assert ut[seg == 0][0] != ut[seg == 1][0]
    # one product per category: its UT term is all category level
    np.testing.assert_allclose(ref["UT by category"], ref["I+U+T+UT"])
    # a product whose creatives all share one style: the segment's mean over them is its taste for each
    truth.products.styles[pid, :, :] = truth.products.styles[pid, 0]
    same = truth.rung_logits(users, creatives)
    np.testing.assert_allclose(same["I+U+T+UT"], same["full"])
    assert not np.allclose(same["I+U"], same["full"])
