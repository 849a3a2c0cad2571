"""Group-DPO, the procedural renderer, the online A/B scoring, generation and the gallery."""
import html
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch

from osmf_core.data import catalog as C
from osmf_core.training.dpo import dpo_loss, preference_pairs
from osmf_core.training.robust import GroupWeights


# ------------------------------------------------------------------------------ eq. 9 (pure)
def test_dpo_loss_matches_eq9_on_hand_computed_numbers():
    t = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    loss, losses, rw, rl = dpo_loss(t(-1.0, -3.0), t(-2.0, -1.0), t(-1.5, -2.0), t(-1.5, -2.0), beta=0.5)
    # pair 0: beta*(−1+1.5)=0.25 vs beta*(−2+1.5)=−0.25 -> −log σ(0.5); pair 1: −0.5 vs 0.5 -> −log σ(−1)
    want = [-math.log(1 / (1 + math.exp(-0.5))), -math.log(1 / (1 + math.exp(1.0)))]
    assert losses.tolist() == pytest.approx(want) and float(loss) == pytest.approx(np.mean(want))
    assert rw.tolist() == pytest.approx([0.25, -0.5]) and rl.tolist() == pytest.approx([-0.25, 0.5])
    weighted, *_ = dpo_loss(t(-1.0, -3.0), t(-2.0, -1.0), t(-1.5, -2.0), t(-1.5, -2.0), 0.5, t(0.25, 0.75))
    assert float(weighted) == pytest.approx(0.25 * want[0] + 0.75 * want[1])
    # policy == reference: every pair sits at log 2, whatever beta
    assert float(dpo_loss(t(-4.0), t(-9.0), t(-4.0), t(-9.0), 3.0)[0]) == pytest.approx(math.log(2))


def test_group_weights_follow_exponentiated_gradient():
    w = GroupWeights([("p", 0), ("p", 1)], eta=math.log(2))
    w.update([("p", 0), ("p", 0), ("p", 1)], np.array([1.0, 1.0, 0.0]))  # group 0 loss 1: its weight doubles
    assert w.alpha().tolist() == pytest.approx([2 / 3, 1 / 3])
    assert w.batch_weights([("p", 0), ("p", 1), ("p", 1)]).tolist() == pytest.approx([0.5, 0.25, 0.25])


def test_observed_losses_count_before_the_next_weights_as_updates_would():
    """observe (the training step's call: on a GPU the losses are copied without waiting) then batch_weights or
    alpha gives what update, batch by batch in the same order, gives."""
    keys = [("p", 0), ("p", 1), ("q", 0)]
    now, later = GroupWeights(keys, eta=0.5), GroupWeights(keys, eta=0.5)
    batches = [([("p", 0), ("q", 0)], [1.0, 0.25]), ([("p", 1), ("p", 1)], [2.0, 0.0]), ([("q", 0)], [3.0])]
    for k, losses in batches:
        now.update(k, np.array(losses))
        later.observe(k, torch.tensor(losses))
    assert len(later.pending) == 3
    assert later.batch_weights(keys).tolist() == now.batch_weights(keys).tolist() and not later.pending
    later.observe([("p", 0)], torch.tensor([5.0]))
    now.update([("p", 0)], np.array([5.0]))
    assert later.alpha().tolist() == now.alpha().tolist() and now.alpha()[0] > 0.5


def test_a_response_cut_by_max_len_stops_in_one_line_before_any_forward(policy_and_batch):
    from osmf_core.models.gmllm.policy import core_of
    from osmf_core.training.dpo import response_inputs
    _, policy, _, _, ctx = policy_and_batch
    core = core_of(policy)
    ok = response_inputs(core, ctx, ["the product", "the product, warm palette"], True, 200, "cpu")
    assert ok["labels"].shape[0] == 2
    with pytest.raises(ValueError, match="lost every token to max_len"):
        response_inputs(core, ctx, ["the product", "the product, warm palette"], True, 20, "cpu")


def test_preference_pairs_take_best_and_worst_distinct_prompts():
    ctx = pd.DataFrame({"product_id": [7, 7, 8], "group_id": [0, 1, 0]})
    prompts = [["a", "b", "c"], ["x", "x", "x"], ["m", "n", "o"]]
    scores = [np.array([0.2, 0.9, 0.5]), np.array([0.1, 0.9, 0.5]), np.array([0.50, 0.52, 0.51])]
    pairs = preference_pairs(ctx, prompts, scores, min_margin=0.05)
    # context 1 has one distinct prompt, context 2's gap 0.02 is under the margin
    assert pairs[["ctx", "chosen", "rejected", "product_id", "group_id"]].values.tolist() == [[0, "b", "a", 7, 0]]
    assert pairs["grm_margin"].tolist() == pytest.approx([0.7])


# ------------------------------------------------------------------------------ LoRA policy and reference
@pytest.fixture(scope="module")
def policy_and_batch():
    from osmf_core.features.templates import render
    from osmf_core.models.gmllm.builders import build_tiny
    from osmf_core.models.gmllm.model import GMLLMConfig
    from osmf_core.models.gmllm.tokens import train_tokenizer
    from osmf_core.training.dpo import DPOConfig, add_lora
    from osmf_core.models.gmllm.policy import core_of, policy_inputs
    cfg = GMLLMConfig(image_size=32, patch_size=16, vision_hidden=16, text_hidden=32, text_heads=2, text_intermediate=64,
                      vocab_size=300, group_dim=4, group_points=10, group_hidden=16)
    texts = [render("prompt_generation", k, "Nova") for k in range(4)] + ["the product, cozy kitchen background"] * 3
    torch.manual_seed(0)
    base = build_tiny(cfg, train_tokenizer(texts * 4, cfg.vocab_size))
    reference = {k: v.clone() for k, v in base.state_dict().items()}
    policy = add_lora(base, DPOConfig(lora_r=4))
    from osmf_core.world.images import to_png
    png = to_png(np.full((32, 32, 3), 120, np.uint8))
    ctx = {"instruction": [render("prompt_generation", 0, "Nova")] * 2, "image": [png, png],
           "group_features": [np.ones(44, np.float32), -np.ones(44, np.float32)]}
    inputs = policy_inputs(core_of(policy), ctx, ["the product, cozy kitchen background", "the product, warm palette"],
                           True, 200, "cpu")
    return base, policy, reference, inputs, ctx


def test_lora_trains_only_adapters_and_disabled_adapters_give_the_base_model(policy_and_batch):
    from osmf_core.training.dpo import sequence_logprob
    from osmf_core.models.gmllm.policy import core_of
    base, policy, reference, inputs, _ = policy_and_batch
    trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and "language_model" in n for n in trainable)
    with torch.no_grad():
        base_lp = sequence_logprob(core_of(policy), inputs)  # LoRA B starts at zero: the policy is the base model
    opt = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(5):
        loss = -sequence_logprob(policy, inputs).sum()
        loss.backward()
        opt.step()
        opt.zero_grad()
    with torch.no_grad():
        moved = sequence_logprob(policy, inputs)
        with policy.disable_adapter():
            ref_lp = sequence_logprob(policy, inputs)
    assert (moved > base_lp + 1e-3).all()  # the adapters learned
    assert torch.allclose(ref_lp, base_lp, atol=1e-6)  # adapters off = the untouched base model
    for name, value in core_of(policy).state_dict().items():  # every base weight is bit-identical
        clean = name.replace("base_layer.", "")
        if "lora_" not in name:
            assert torch.equal(value, reference[clean]), name


def test_a_robust_group_dpo_step_on_the_single_gpu_plan_never_reads_the_device_back(policy_and_batch, device_reads):
    """A Group-DPO step with group weights, in a real engine with the single-GPU plan (fused AdamW, bf16
    autocast), on the CPU: no operator reads a tensor back (it checked its responses on the device, once in each
    pass), and the step's losses wait in the weights until the next batch's weights are read."""
    import dataclasses
    import deepspeed
    from osmf_core.training.dpo import DPOConfig, dpo_step_loss
    from osmf_core.training.engine import EngineConfig, engine_config, one_process_step, plan
    from osmf_core.training.loop import init_distributed, train_step
    _, policy, _, _, ctx = policy_and_batch
    init_distributed()
    p = dataclasses.replace(plan(EngineConfig(), 1, True, 2), compile=False)
    engine, _, _, _ = deepspeed.initialize(model=policy, model_parameters=[q for q in policy.parameters() if q.requires_grad],
                                           config=engine_config("cluster/deepspeed/gmllm.json", 2, 1e-3, 10, p))
    one_process_step(engine)
    ctx = pd.DataFrame(ctx)
    pairs = pd.DataFrame({"ctx": [0, 1], "chosen": ["the product, cozy kitchen background", "the product, warm palette"],
                          "rejected": ["the product", "the product, neon"], "product_id": [7, 7], "group_id": [0, 1]})
    weights = GroupWeights(zip(pairs["product_id"], pairs["group_id"]), eta=1.0)
    cfg = DPOConfig(max_len=200)
    loss_of = lambda b: dpo_step_loss(engine, policy, ctx, b, cfg, weights)  # noqa: E731
    train_step(engine, loss_of, pairs)  # the first step creates the optimizer's state
    with device_reads() as reads:
        train_step(engine, loss_of, pairs)
    assert reads.seen == []
    assert len(weights.pending) == 1  # the first step's losses were applied when this step read its weights
    assert weights.alpha().tolist() != [0.5, 0.5] and not weights.pending


def test_generate_is_greedy_deterministic_and_samples_n(policy_and_batch):
    from osmf_core.models.gmllm.policy import core_of, generate
    _, policy, _, _, ctx = policy_and_batch
    core = core_of(policy)
    g1, g2 = generate(core, ctx, True, greedy=True, max_new_tokens=8), generate(core, ctx, True, greedy=True, max_new_tokens=8)
    assert g1 == g2 and [len(x) for x in g1] == [1, 1]
    s = generate(core, ctx, True, n=3, max_new_tokens=8, seed=1)
    assert [len(x) for x in s] == [3, 3] and s == generate(core, ctx, True, n=3, max_new_tokens=8, seed=1)


# ------------------------------------------------------------------------------ renderer and simulator agree
def test_procedural_renderer_draws_a_creative_exactly_as_the_simulator_did(instructions_wh):
    from osmf_core.world.images import from_png
    from osmf_core.rendering.procedural import ProceduralRenderer, RenderJob
    from osmf_core.world.truth import read_manifest
    from osmf_core.data.reader import read_frame
    from osmf_core.world.truth import Truth
    from osmf_core.world.styles import parse_style
    wh, _ = instructions_wh
    seed, _ = read_manifest(wh)
    truth = Truth.from_warehouse(wh)
    prods = read_frame(C.PRODUCTS, wh, ["product_id", "image", "mask"])
    crea = read_frame(C.CREATIVES, wh, ["creative_id", "product_id", "prompt", "image"])
    sample = crea.sort_values("creative_id").iloc[::7].head(12).merge(prods, on="product_id", suffixes=("", "_product"))
    jobs = [RenderJob.from_pngs(r.product_id, r.image_product, r.mask, r.prompt, [seed, 5, r.creative_id])
            for r in sample.itertuples()]
    for r, img in zip(sample.itertuples(), ProceduralRenderer().render(jobs)):
        assert (parse_style(r.prompt) == truth.creative_style([r.creative_id])[0]).all()  # the prompt names the style
        assert np.array_equal(img, from_png(r.image)[..., :3]), r.creative_id  # and draws the simulator's pixels
        inside = from_png(r.mask) > 0
        assert np.array_equal(img[inside], from_png(r.image_product)[..., :3][inside])


# ------------------------------------------------------------------------------ online A/B scoring (pure)
def test_online_summary_weighs_groups_by_size_and_takes_each_products_worst_group():
    from osmf_core.evaluation.online import summarize, table3
    scored = pd.DataFrame({"product_id": [1, 1, 2], "group_id": [0, 1, 0], "size": [100, 300, 100],
                           "sim_ctr": [0.02, 0.04, 0.01]})
    s = summarize(scored)
    assert s["ctr"] == pytest.approx((2 + 12 + 1) / 500) and s["worst_group_ctr"] == pytest.approx((0.02 + 0.01) / 2)
    t = table3({"pretrained": {"ctr": 0.02, "worst_group_ctr": 0.01}, "osmf": {"ctr": 0.025, "worst_group_ctr": 0.02}})
    assert t.loc["osmf", "lift"] == pytest.approx(0.25) and t.loc["pretrained", "lift"] == 0


def test_oracle_style_is_the_exhaustive_best():
    from osmf_core.world.truth import Truth
    from osmf_core.world.model import sample_users
    from osmf_core.world.params import V1
    from osmf_core.world.styles import DIM_SIZES
    truth, users = Truth(5, 28, V1), pd.DataFrame(sample_users(5, 0, 400))  # v1: no own taste, the search is exact
    for pid in (0, 9):
        style, ctr = truth.oracle_style(pid, users)
        assert ctr == pytest.approx(truth.expected_ctr(style, pid, users))
        rng = np.random.default_rng(pid)
        others = [truth.expected_ctr(rng.integers(0, DIM_SIZES), pid, users) for _ in range(200)]
        assert ctr >= max(others)
        for j, n in enumerate(DIM_SIZES):  # changing any one dimension never helps
            for v in range(n):
                alt = style.copy()
                alt[j] = v
                assert truth.expected_ctr(alt, pid, users) <= ctr + 1e-12


def test_logged_and_one_size_ceilings_are_the_best_of_their_candidates():
    from osmf_core.evaluation.online import oracle_prompts, pair_agreement, score_prompts, summarize
    from osmf_core.world.truth import Truth
    from osmf_core.world.model import sample_users
    from osmf_core.world.styles import parse_style
    truth, users = Truth(5, 28), pd.DataFrame(sample_users(5, 0, 600))
    members = pd.concat([users.assign(product_id=pid, group_id=users["gender"].to_numpy() + 0)  # 2 groups
                         for pid in (0, 9)], ignore_index=True)
    per_group = score_prompts(truth, members, oracle_prompts(truth, members))
    logged = score_prompts(truth, members, oracle_prompts(truth, members, logged=True))
    one = score_prompts(truth, members, oracle_prompts(truth, members, per_group=False))
    for (pid, g), who in members.groupby(["product_id", "group_id"]):
        styles = truth.logged_styles(pid)
        assert len(styles) == truth.products.n_creatives[pid] >= 3
        ctrs = [truth.expected_ctr(st, pid, who) for st in styles]
        row = logged[(logged["product_id"] == pid) & (logged["group_id"] == g)].iloc[0]
        assert row["sim_ctr"] == pytest.approx(max(ctrs))  # the best logged background of that group
        assert any(np.array_equal(parse_style(row["prompt"]), st) for st in styles)
    for pid, rows in one.groupby("product_id"):
        assert rows["prompt"].nunique() == 1  # one image for every group of the product
        who = members[members["product_id"] == pid]
        best = truth.expected_ctr(rows["prompt"].iat[0], pid, who)
        for p in per_group[per_group["product_id"] == pid]["prompt"]:  # no group's own best beats it overall
            assert truth.expected_ctr(p, pid, who) <= best + 1e-12
    s_group, s_logged, s_one = summarize(per_group)["ctr"], summarize(logged)["ctr"], summarize(one)["ctr"]
    assert s_logged < s_group and s_one <= s_group
    with pytest.raises(ValueError, match="non-empty"):
        truth.oracle_style(0, users, np.zeros((0, 4), np.int64))
    # the reward check: pairs ordered by the truth agree 100%, reversed 0%, with the gain's sign following
    best = per_group.set_index(["product_id", "group_id"])["prompt"]
    worst = logged.set_index(["product_id", "group_id"])["prompt"]  # strictly below each group's oracle
    pairs = pd.DataFrame({"product_id": [k[0] for k in best.index], "group_id": [k[1] for k in best.index],
                          "chosen": best.to_numpy(), "rejected": worst.loc[best.index].to_numpy()})
    right = pair_agreement(truth, members, pairs)
    wrong = pair_agreement(truth, members, pairs.rename(columns={"chosen": "rejected", "rejected": "chosen"}))
    assert right["pairs"] == 4 and right["agreement"] == 1.0 and wrong["agreement"] == 0.0
    assert right["true_gain"] == pytest.approx(-wrong["true_gain"]) and right["true_gain"] > 0
    assert right["chosen_ctr"] == pytest.approx(per_group["sim_ctr"].mean())
    assert right["rejected_ctr"] == pytest.approx(wrong["chosen_ctr"]) == pytest.approx(logged["sim_ctr"].mean())
    assert "by_margin" not in right  # no reward scores, no breakdown
    # by margin: the 4 right pairs called surely (gap 2), the 4 reversed ones narrowly (gap 0.5)
    mixed = pd.concat([pairs.assign(grm_margin=2.0), pairs.rename(columns={"chosen": "rejected", "rejected": "chosen"})
                       .assign(grm_margin=0.5)], ignore_index=True)
    split = pair_agreement(truth, members, mixed, bins=2)
    assert split["agreement"] == 0.5 and [b["pairs"] for b in split["by_margin"]] == [4, 4]
    assert [b["margin_median"] for b in split["by_margin"]] == [0.5, 2.0]
    assert [b["agreement"] for b in split["by_margin"]] == [0.0, 1.0]
    assert split["by_margin"][1]["true_gain"] == pytest.approx(right["true_gain"])


# ------------------------------------------------------------------------------ Group-DPO end to end
def _dpo_cfg(models, out, **kw):
    from osmf_core.training.dpo import DPOConfig
    wh, gm, grm = models
    return DPOConfig(**{**dict(warehouse=wh, gmllm=gm, grm=grm, rounds=2, samples=3, max_contexts=6, batch_size=2,
                               epochs=1, max_new_tokens=12, max_len=400, save_every=2, out_dir=str(out), progress=False),
                        **kw})


def test_group_dpo_killed_mid_round_resumes_and_ends_like_an_unbroken_run(tiny_models, tmp_path):
    from peft import PeftModel
    from osmf_core.training.dpo import run_group_dpo
    from osmf_core.models.gmllm.policy import ADAPTER_SUBDIR
    from osmf_core.models.gmllm.model import GroupLlava
    whole = run_group_dpo(_dpo_cfg(tiny_models, tmp_path / "whole"))
    assert len(whole["rounds"]) == 2
    r0 = whole["rounds"][0]
    assert r0["pairs"] > 0 and r0["steps"] >= 1
    assert r0["after"]["reward_accuracy"] >= r0["before"]["reward_accuracy"]  # DPO moved toward the winners
    assert r0["after"]["reward_margin"] > 0 and set(r0["per_group_after"])
    broken = _dpo_cfg(tiny_models, tmp_path / "broken")
    assert run_group_dpo(broken, stop_after=1)["stopped"]  # killed inside round 0
    resumed = run_group_dpo(broken)
    assert [r["pairs"] for r in resumed["rounds"]] == [r["pairs"] for r in whole["rounds"]]

    def adapters(d):
        m = PeftModel.from_pretrained(GroupLlava.load(tiny_models[1]), str(d / ADAPTER_SUBDIR))
        return {n: p for n, p in m.named_parameters() if "lora_" in n}
    a, b = adapters(tmp_path / "whole"), adapters(tmp_path / "broken")
    assert a and all(torch.allclose(a[n], b[n], atol=1e-6) for n in a)
    assert any(p.abs().sum() > 0 for n, p in a.items() if "lora_B" in n)  # it trained


def test_robust_group_dpo_reports_its_worst_groups(tiny_models, tmp_path):
    from osmf_core.training.dpo import run_group_dpo
    out = run_group_dpo(_dpo_cfg(tiny_models, tmp_path / "robust", robust=True, rounds=1))
    assert out["rounds"][0]["worst_groups"]


# ------------------------------------------------------------------------------ generation and gallery
def test_generate_writes_every_product_group_once_and_a_gallery_listing_them(spark, tiny_models, tmp_path):
    from osmf_core.data.store import read_table
    from osmf_core.evaluation.online import simulated_ctr
    from osmf_core.generation.pipeline import GenerateConfig, generate_creatives
    from osmf_core.data.audiences import audiences
    from osmf_core.features.contexts import load_contexts
    wh, gm, grm = tiny_models
    cfg = GenerateConfig(gmllm=gm, dpo="", grm=grm, images_dir=str(tmp_path / "img"), gallery=str(tmp_path / "g" / "index.html"))
    first = generate_creatives(spark, cfg, wh, log=lambda *_: None, simulated_ctr=simulated_ctr(wh))
    again = generate_creatives(spark, cfg, wh, log=lambda *_: None, simulated_ctr=simulated_ctr(wh))  # a rerun replaces, never duplicates
    ctx = load_contexts(wh)
    want = set(zip(ctx["product_id"], ctx["group_id"]))
    gen = read_table(spark, C.GENERATED, wh).toPandas()
    assert first == again and len(gen) == len(want) == first["images"]
    assert set(zip(gen["product_id"], gen["group_id"])) == want
    assert gen["sim_ctr"].between(0, 1).all() and gen["grm_score"].between(0, 1).all()
    products = ctx["product_id"].nunique()
    assert len(list((tmp_path / "img").glob("*/*.png"))) == len(want) + products  # + one one-size image each
    assert read_table(spark, C.PROMPTS, wh).count() == len(want)
    page = (tmp_path / "g" / "index.html").read_text()
    cells = set((int(p), int(g)) for p, g in re.findall(r"data-product='(\d+)' data-group='(\d+)'", page))
    assert cells == want and page.count("<img ") == len(want) + products
    # the one-size column: one prompt per product; each group's lift is over that prompt's CTR in the same group
    one = {int(p): html.unescape(t) for p, t in
           re.findall(r"data-product='(\d+)' data-group='one_size'><img [^>]*><div>([^<]*)</div>", page)}
    assert set(one) == set(ctx["product_id"])
    members = audiences(wh, first["run_date"], ctx["product_id"].unique())
    frame = gen[["product_id", "group_id", "sim_ctr"]].assign(prompt=[one[int(p)] for p in gen["product_id"]])
    base = simulated_ctr(wh)(members, frame)
    shown = {(int(p), int(g)): (float(lift), float(b)) for p, g, lift, b in re.findall(
        r"data-product='(\d+)' data-group='(\d+)'>.*?\(([+-][\d.]+)% over one size, ([\d.]+)\)", page)}
    assert set(shown) == want
    for (p, g, ctr), b in zip(gen[["product_id", "group_id", "sim_ctr"]].itertuples(index=False), base):
        lift, b_shown = shown[(int(p), int(g))]
        assert b_shown == pytest.approx(b, abs=5e-5) and lift == pytest.approx(100 * (ctr / b - 1), abs=0.05)
    # groups in words: no attribute shown as a bare code ("gender 1")
    assert not re.search(r"most common:[^<]*\b(" + "|".join(C.USER_ATTRIBUTES) + r") \d", page)


def test_group_descriptions_name_the_values_in_words():
    from osmf_core.generation.gallery import group_descriptions
    users = pd.DataFrame({a: [0] * 6 for a in C.USER_ATTRIBUTES}).assign(
        product_id=7, group_id=[0, 0, 0, 1, 1, 1], gender=[0, 0, 0, 1, 1, 1], age=[4, 4, 3, 9, 9, 9])
    got = group_descriptions(users)
    assert got == {(7, 0): "3 users; most common: female, age 27-29", (7, 1): "3 users; most common: male, age 50-54"}


def test_style_errors_name_the_unknown_word():
    from osmf_core.world.styles import DIM_SIZES, style_errors, style_prompt
    assert style_errors("the product, cozy city street background, neon palette, golden hour lighting") == []
    assert style_errors("the product, kitchen background") == [] and style_errors("the product") == []
    assert all(not style_errors(style_prompt(list(s))) for s in np.ndindex(*DIM_SIZES))  # every style reads back
    [err] = style_errors("the product, cozy moon background, warm palette")
    assert "unknown style word 'moon'" in err and "kitchen" in err
    assert "cannot read 'sunny vibes'" in style_errors("the product, sunny vibes")[0]


def test_an_unknown_style_word_stops_generation_in_one_line(capsys, tmp_path):
    from jobs.generate import main
    rc = main(["--prompt", "the product, foggy palette", "--warehouse", str(tmp_path / "none")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "unknown style word 'foggy'" in err[0] and err[0].startswith("generate:")
    assert not (tmp_path / "none").exists()  # nothing was touched
