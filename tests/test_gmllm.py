"""G-MLLM and GRM: Table 5 templates, the instruction job, the group token, training, save/load, resume."""
import numpy as np
import pandas as pd
import pytest
import torch
from pyspark.sql import functions as F

from osmf_core.data import catalog as C
from osmf_core.features.templates import (GROUP_TOKEN, IMAGE_TOKEN, TABLE5_ATTRIBUTES, TABLE5_TASKS, TEMPLATES,
                                    best_ctr_teacher, most_common_profile, profile_text, render)
from osmf_core.models.gmllm.builders import build_tiny
from osmf_core.models.gmllm.model import GMLLMConfig, GroupLlava, points_kept
from osmf_core.models.gmllm.tokens import train_tokenizer
from osmf_core.data.store import checksum, read_table

TINY = GMLLMConfig(image_size=32, patch_size=16, vision_hidden=16, text_hidden=32, text_heads=2, text_intermediate=64,
                   vocab_size=400, group_dim=8, group_points=10, group_hidden=32)


# ------------------------------------------------------------------------------ templates (pure)
def test_templates_name_exactly_the_table4_attributes():
    listed = [t for task in TABLE5_TASKS for t in TEMPLATES[task] if "member_level" in t]
    assert len(listed) == 3  # the templates of Table 5 that spell the attribute list out
    for t in listed:
        names = t.split("member_level")[1].split(".")[0]
        assert ["member_level", *[n.strip() for n in names.split(",")[1:]]] == list(TABLE5_ATTRIBUTES)
    assert set(TABLE5_ATTRIBUTES) == set(C.USER_ATTRIBUTES)
    row = {a: i for i, a in enumerate(C.USER_ATTRIBUTES)}
    text = profile_text(row)
    assert text.startswith("member_level: 13, promotions_sensitive_level: 19,") and text.endswith("color: 1")
    assert all(len(TEMPLATES[t]) == 4 for t in TABLE5_TASKS)


def test_render_places_title_group_token_and_image():
    text = render("prompt_generation", 0, "Nova Pro Phone 7")
    assert text.startswith(IMAGE_TOKEN) and '"Nova Pro Phone 7"' in text and text.count(GROUP_TOKEN) == 1
    assert "<users>" not in text and "{}" not in text
    assert render("product_understanding", 2).startswith(f"{IMAGE_TOKEN} Construct a succinct")
    assert IMAGE_TOKEN not in render("group_analysis", 1)


def test_most_common_profile_and_teacher_have_known_answers():
    users = pd.DataFrame({a: [1, 1, 2, 2, 3] for a in C.USER_ATTRIBUTES}).assign(age=[5, 5, 5, 0, 1])
    modes = most_common_profile(users)
    assert modes["age"] == 5 and modes["gender"] == 1  # gender ties 1,1 vs 2,2: the smaller code
    cands = pd.DataFrame({"creative_id": [10, 11, 12], "impressions": [3, 1000, 1000], "clicks": [1, 60, 20],
                          "prompt": ["X, cozy beach background, neon palette", "X, minimal office background, warm palette",
                                     "X, serene forest background"]})
    # creative 10 has the highest raw CTR (1/3) on 3 impressions; smoothing toward the pooled 4% makes 11 (6%) win
    assert best_ctr_teacher(cands) == "the product, minimal office background, warm palette"


def test_points_kept_spreads_over_the_percentile_set():
    assert points_kept(0, 10) == [] and points_kept(1, 10) == [0] and points_kept(10, 10) == list(range(10))
    assert points_kept(5, 10) == [0, 2, 4, 7, 9]


# ------------------------------------------------------------------------------ the model (pure torch)
@pytest.fixture(scope="module")
def tiny():
    texts = [render(t, k, "Nova Pro Phone 7") for t in TEMPLATES for k in range(len(TEMPLATES[t]))]
    tok = train_tokenizer(texts * 3 + ["USER: ASSISTANT: the product, cozy kitchen background"], TINY.vocab_size)
    torch.manual_seed(0)
    return build_tiny(TINY, tok)


def _png(seed):
    from osmf_core.world.images import to_png
    return to_png((np.random.default_rng(seed).random((32, 32, 3)) * 255).astype(np.uint8))


def _batch(model, group=True, seed=0, labels=True):
    """Two rows; without labels, a pass returns the logits (with them: the loss and log-probabilities)."""
    from osmf_core.training.gmllm import encode
    instr = [render("prompt_generation", 0, "Nova"), render("group_analysis", 1)]
    if not group:
        instr = [i.replace(GROUP_TOKEN, "them") for i in instr]
    enc = encode(model, instr, ["the product, cozy kitchen background", "member_level: 3"], 200, images=[_png(seed), b""])
    g = torch.from_numpy(np.random.default_rng(seed).normal(size=(2, 11 * TINY.group_dim)).astype(np.float32))
    if not labels:
        enc = {k: v for k, v in enc.items() if k != "labels"}
    return {**enc, "group_features": g}


@pytest.mark.parametrize("group", [True, False])
def test_forward_and_backward_with_and_without_the_group_token(tiny, group):
    batch = _batch(tiny, group)
    assert ((batch["input_ids"] == tiny.group_token_id).sum(1) == (1 if group else 0)).all()
    assert (batch["input_ids"][0] == tiny.image_token_id).sum() == tiny.n_image_tokens
    tiny.zero_grad()
    out = tiny(**batch)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    grads = tiny.group_mlp.net[1].weight.grad
    assert (grads is not None and grads.abs().sum() > 0) == group  # the MLP is trained only through the token
    patch = [p for n, p in tiny.llava.model.vision_tower.named_parameters() if "patch_embedding" in n][0]
    assert patch.grad.abs().sum() > 0  # the vision tower learns through the image tokens


def test_a_training_pass_builds_the_mask_transformers_would_so_transformers_reads_nothing_back(tiny):
    """forward and hidden give the language model its 4D mask, built as transformers builds it from the 2D one
    (whose check for padding reads the GPU back): the same outputs at every position, padding included."""
    batch = _batch(tiny)
    real = batch["attention_mask"].bool()
    assert not real.all() and real.sum(1).ne(real.shape[1]).sum() == 1  # one row padded, one not
    seen = []
    hook = tiny.llava.model.language_model.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs.get("attention_mask")), with_kwargs=True)
    tiny.eval()
    unlabelled = {k: v for k, v in batch.items() if k != "labels"}
    try:
        with torch.no_grad():
            out, h = tiny(**unlabelled), tiny.hidden(**unlabelled)
            emb = tiny.embed(batch["input_ids"], batch["pixel_values"], batch["group_features"])
            two_d = tiny.llava(inputs_embeds=emb, attention_mask=batch["attention_mask"], labels=batch["labels"],
                               output_hidden_states=True, use_cache=False)
    finally:
        hook.remove()
    n = real.shape[1]
    assert [m.shape for m in seen[:2]] == [(2, 1, n, n)] * 2 and seen[2].shape == (2, n)
    assert torch.equal(seen[0][1, 0], torch.ones(n, n, dtype=torch.bool).tril() & real[1])  # causal, real keys
    assert torch.allclose(out.logits, two_d.logits, atol=1e-5)
    assert torch.allclose(h, two_d.hidden_states[-1], atol=1e-5)
    with torch.no_grad():  # the training pass: transformers' loss, through the head's region
        assert torch.allclose(tiny(**batch).loss, two_d.loss, atol=1e-6)


def test_the_training_pass_gives_transformers_loss_and_gradients_and_each_tokens_log_probability(tiny):
    """With labels, forward runs the head and the loss as one region (NextTokenLogprobs) and keeps no logits:
    the loss and every weight's gradient as transformers' causal-LM loss over the logits gives them, and
    token_logprobs is log-softmax of the logits at each scored label (0 elsewhere)."""
    batch = _batch(tiny)
    tiny.train()
    grads, losses = {}, {}
    for way in ("region", "transformers"):
        tiny.zero_grad()
        if way == "region":
            out = tiny(**batch)
            loss = out.loss
        else:
            emb = tiny.embed(batch["input_ids"], batch["pixel_values"], batch["group_features"])
            ref = tiny.llava(inputs_embeds=emb, attention_mask=tiny.lm_mask(batch["attention_mask"]),
                             labels=batch["labels"], use_cache=False)
            loss = ref.loss
        loss.backward()
        losses[way] = loss.detach()
        grads[way] = {k: p.grad.clone() for k, p in tiny.named_parameters() if p.grad is not None}
    assert not hasattr(out, "logits") and out.token_logprobs.shape == (2, batch["input_ids"].shape[1] - 1)
    torch.testing.assert_close(losses["region"], losses["transformers"], rtol=1e-6, atol=1e-6)
    assert grads["region"].keys() == grads["transformers"].keys() and len(grads["region"]) > 10
    for k, g in grads["region"].items():
        torch.testing.assert_close(g, grads["transformers"][k], rtol=1e-4, atol=1e-6)
    target = batch["labels"][:, 1:]
    expected = torch.log_softmax(ref.logits[:, :-1].detach(), -1).gather(-1, target.clamp(min=0)[..., None])[..., 0]
    scored = target != -100
    assert 0 < scored.sum() < scored.numel()  # prompts are not scored
    torch.testing.assert_close(out.token_logprobs.detach()[scored], expected[scored], rtol=1e-5, atol=1e-5)
    assert (out.token_logprobs[~scored] == 0).all()
    assert torch.allclose(-out.token_logprobs.sum() / scored.sum(), out.loss)


def test_deepspeed_finds_the_training_outputs_tensors_and_prepares_their_backward_pass_once(tiny):
    """The training pass's output is a dict, as transformers' outputs are: DeepSpeed's engine registers its hooks
    on the tensors it finds in a module's output, and its one call before the backward pass (the ZeRO
    optimizers' bookkeeping and the accumulation boundary) runs once. In an object that is not a dict, list or
    tuple it finds no tensor, and that call never runs."""
    from deepspeed.runtime.utils import register_output_backward_hooks
    tiny.train()
    out, calls = tiny(**_batch(tiny)), []
    keep = register_output_backward_hooks(out, lambda: calls.append("before backward"))
    out.loss.backward()
    assert calls == ["before backward"] and keep is not None
    assert set(out) == {"loss", "token_logprobs"} and out["loss"] is out.loss


def test_image_patches_are_placed_as_masked_scatter_places_them_with_the_same_gradients():
    """place_rows (embed's placement of the image patches, whose gradient reads nothing back) against
    masked_scatter on rows of 2, 0 and 1 images' positions, one of them at a row's end: the same embeddings, and
    the same gradients for both the text embeddings and the patches."""
    from osmf_core.models.gmllm.model import place_rows
    torch.manual_seed(0)
    where = torch.zeros(3, 7, dtype=torch.bool)
    where[0, 1:5], where[2, 4:7] = True, True  # 7 positions: rows 0 and 2
    emb, rows = torch.randn(3, 7, 5, requires_grad=True), torch.randn(7, 5, requires_grad=True)
    weight = torch.randn(3, 7, 5)
    got = place_rows(emb, where, rows)
    want = emb.masked_scatter(where.unsqueeze(-1), rows)
    assert torch.equal(got, want)
    assert torch.equal(got[2, 4], rows[4]) and torch.equal(got[1], emb[1])  # in reading order; row 1 untouched
    g_got = torch.autograd.grad((got * weight).sum(), (emb, rows))
    g_want = torch.autograd.grad((want * weight).sum(), (emb, rows))
    assert all(torch.equal(a, b) for a, b in zip(g_got, g_want))
    assert torch.equal(g_got[1][4], weight[2, 4]) and not g_got[0][where].any()
    with pytest.raises(IndexError):  # fewer rows than positions: an error, as masked_scatter's, not zeros
        place_rows(emb, where, rows[:6])


def test_the_grm_pools_each_rows_patches_in_order_without_a_boolean_index(tiny):
    """The patches pooling takes each row's n_image_tokens hidden states from where its image begins: the same
    as the boolean index it replaced (h[img], which reads the GPU back), on rows whose image starts at different
    positions (a group token before it or not)."""
    from osmf_core.models.gmllm.grm import GRM, grm_instruction
    grm = GRM(tiny, use_group=True, pooling="patches").eval()
    instr = [grm_instruction("Nova"), grm_instruction("Nova Pro").replace(GROUP_TOKEN, "them")]
    from osmf_core.models.gmllm.model import encode
    g = list(np.random.default_rng(0).normal(size=(2, 11 * TINY.group_dim)).astype(np.float32))
    enc = encode(tiny, instr, None, 64, True, [_png(0), _png(1)], g)
    img = enc["input_ids"] == tiny.image_token_id
    assert img.int().argmax(1).tolist()[0] != img.int().argmax(1).tolist()[1]  # images start apart
    seen = {}
    grm.style.register_forward_hook(lambda m, args, out: seen.update(patches=args[0]))
    with torch.no_grad():
        grm.reward(**enc)
        h = tiny.hidden(**{k: enc[k] for k in ("input_ids", "attention_mask", "pixel_values", "group_features")},
                        n_points=None)
    assert torch.equal(seen["patches"], h[img].reshape(2, -1))


def test_inputs_are_encoded_on_the_cpu_wherever_the_model_is(tiny):
    """encode builds every input on the CPU, images included, even where the model's weights are elsewhere (here
    the meta device, standing in for a GPU): a copy to a GPU from pageable memory, as pixels() made before, waits
    for the device in every step; to_device moves them through pinned memory."""
    import copy
    from osmf_core.models.gmllm.model import encode
    away = copy.deepcopy(tiny).to("meta")
    enc = encode(away, [render("prompt_generation", 0, "Nova")], ["the product"], 200, images=[_png(0)],
                 group_features=[np.zeros(11 * TINY.group_dim, np.float32)])
    assert {k: v.device.type for k, v in enc.items()} == dict.fromkeys(enc, "cpu")
    assert torch.equal(enc["pixel_values"], encode(tiny, [render("prompt_generation", 0, "Nova")], ["the product"],
                                                   200, images=[_png(0)])["pixel_values"])


def test_the_group_token_reads_only_the_points_a_model_keeps(tiny):
    """n_points zeroes the percentile points a model of fewer points does not read: with 5 of 10, changing a
    dropped point leaves e_G as it was, changing a kept one does not."""
    mlp = tiny.group_mlp
    g = torch.randn(1, 11, TINY.group_dim)
    dropped, kept = 1 + 1, 1 + 2  # points_kept(5, 10) == [0, 2, 4, 7, 9]
    with torch.no_grad():
        base = mlp(g.flatten(1), 5)
        for point, same in ((dropped, True), (kept, False), (0, False)):
            h = g.clone()
            h[0, point] += 1.0
            assert torch.equal(mlp(h.flatten(1), 5), base) == same, point
        assert torch.equal(mlp(g.flatten(1), 10), mlp(g.flatten(1)))
    with pytest.raises(ValueError, match="n_points"):
        mlp(g.flatten(1), -1)


def test_the_group_token_changes_the_output_distribution(tiny):
    tiny.eval()
    a = _batch(tiny, seed=0, labels=False)
    b = {**a, "group_features": _batch(tiny, seed=1)["group_features"]}  # another group
    with torch.no_grad():
        pa = torch.softmax(tiny(**a).logits, -1)
        pb = torch.softmax(tiny(**b).logits, -1)
        # without a group token in the input, the features are not read at all
        na = _batch(tiny, group=False, labels=False)
        nb = {**na, "group_features": _batch(tiny, seed=1)["group_features"]}
        same = torch.equal(tiny(**na).logits, tiny(**nb).logits)
    assert (pa - pb).abs().max() > 1e-4 and same
    # zeroed points: a 0-point token ignores the percentile points, reads the centroid
    g = a["group_features"].clone()
    g2 = g.clone()
    g2[:, TINY.group_dim:] += 5.0
    assert torch.allclose(tiny.group_mlp(g, 0), tiny.group_mlp(g2, 0))
    assert not torch.allclose(tiny.group_mlp(g, 10), tiny.group_mlp(g2, 10))


def test_one_training_step_lowers_the_loss_on_a_fixed_batch(tiny):
    batch = _batch(tiny, seed=3)
    opt = torch.optim.AdamW(tiny.parameters(), lr=3e-3)
    tiny.train()
    before = tiny(**batch).loss
    before.backward()
    opt.step()
    opt.zero_grad()
    with torch.no_grad():
        after = tiny(**batch).loss
    assert after < before


def test_save_then_load_gives_identical_logits(tiny, tmp_path):
    tiny.eval()
    batch = _batch(tiny, seed=5, labels=False)
    tiny.save(tmp_path / "m")
    back = GroupLlava.load(tmp_path / "m")
    with torch.no_grad():
        assert torch.equal(tiny(**batch).logits, back(**batch).logits)
    assert back.tokenizer.convert_tokens_to_ids(GROUP_TOKEN) == tiny.group_token_id


# ------------------------------------------------------------------------------ the Spark job
def test_instruction_job_writes_every_task_from_the_groups(spark, instructions_wh):
    wh, summary = instructions_wh
    rows = read_table(spark, C.INSTRUCTIONS, wh).toPandas()
    groups = read_table(spark, C.GROUPS, wh).toPandas()
    products = read_table(spark, C.PRODUCTS, wh).count()
    counts = rows["task"].value_counts().to_dict()
    assert counts == summary["instructions"]
    assert counts["group_analysis"] == counts["prompt_generation"] == len(groups)
    assert counts["product_understanding"] == 2 * products
    assert counts["creative_captioning"] == read_table(spark, C.CREATIVES, wh).count()
    assert counts["behavioral_prediction"] > 0
    grouped = rows["group_id"] >= 0
    assert (rows.loc[grouped, "group_features"].map(len) == 11 * rows.loc[grouped, "group_dim"]).all()
    assert (rows.loc[~grouped, "group_features"].map(len) == 0).all()
    assert (rows["instruction"].str.contains(GROUP_TOKEN) == grouped).all()
    assert ((rows["image"].map(len) > 0) == rows["instruction"].str.contains(IMAGE_TOKEN)).all()
    # group analysis answers with the most common attribute values of the group's users (pandas, by hand)
    one = rows[rows["task"] == "group_analysis"].iloc[0]
    ug = read_table(spark, C.USER_GROUPS, wh).where((F.col("product_id") == int(one["product_id"])) &
                                                    (F.col("group_id") == int(one["group_id"])))
    users = ug.join(read_table(spark, C.USERS, wh), "user_id").toPandas()
    assert one["response"] == "The most common users of this group have " + profile_text(most_common_profile(users)) + "."


def test_grm_examples_are_the_pairs_with_images_split_by_product(spark, instructions_wh):
    from osmf_core.features.instructions import CurationConfig, build_instructions
    wh, summary = instructions_wh
    ex = read_table(spark, C.GRM_EXAMPLES, wh)
    assert ex.count() == read_table(spark, C.PAIRS, wh).count() == sum(summary["grm_examples"].values())
    per_product = ex.groupBy("product_id").agg(F.countDistinct("split").alias("n")).toPandas()
    assert (per_product["n"] == 1).all() and set(summary["grm_examples"]) == {"train", "test"}
    before = [checksum(read_table(spark, t, wh)) for t in (C.INSTRUCTIONS, C.GRM_EXAMPLES)]
    build_instructions(spark, CurationConfig(window_days=3, test_share=0.3), wh, log=lambda *_: None)  # a rerun replaces
    assert [checksum(read_table(spark, t, wh)) for t in (C.INSTRUCTIONS, C.GRM_EXAMPLES)] == before


def test_instruction_job_stops_in_one_line_on_a_bad_run_date(spark, instructions_wh, capsys):
    from jobs.build_instructions import main
    wh, _ = instructions_wh
    capsys.readouterr()
    assert main(["--warehouse", wh, "--master", "local[2]", "--run-date", "2001-01-01"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("build_instructions: --run-date 2001-01-01: gaip.groups has no run of that date"), err


# ------------------------------------------------------------------------------ DeepSpeed training
def _pre_cfg(wh, out, **kw):
    from osmf_core.training.gmllm import PretrainConfig
    return PretrainConfig(warehouse=wh, model=GMLLMConfig(**{**TINY.__dict__, "group_dim": 32, "image_size": 32}),
                          batch_size=8, out_dir=str(out), progress=False, max_len=160, **kw)


def test_pretraining_killed_mid_run_resumes_and_ends_like_an_unbroken_run(instructions_wh, tmp_path):
    from osmf_core.training.gmllm import MODEL_SUBDIR, pretrain
    wh, _ = instructions_wh
    whole = pretrain(_pre_cfg(wh, tmp_path / "whole", max_steps=12, save_every=4))
    assert whole["step"] == 12 and whole["loss"] < whole["first_losses"][0]
    broken = _pre_cfg(wh, tmp_path / "broken", max_steps=12, save_every=4)
    assert pretrain(broken, stop_after=6)["stopped"]  # killed after step 6: the last checkpoint is step 4
    resumed = pretrain(broken)
    assert resumed["resumed_from"] == 4 and resumed["step"] == 12
    a, b = GroupLlava.load(tmp_path / "whole" / MODEL_SUBDIR), GroupLlava.load(tmp_path / "broken" / MODEL_SUBDIR)
    for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(p, q, atol=1e-6), n
    assert set(whole["task_loss"]) == set(TEMPLATES)


def test_pretraining_without_the_group_token_never_trains_the_group_mlp(instructions_wh, tmp_path):
    """--no-group (the G-MLLM of OSMF without group): the instructions lose their group token, so the group MLP
    gets no gradient and ends exactly as it was initialised, while the rest of the model trains; the same
    seed with the token moves the group MLP."""
    from osmf_core.training.gmllm import MODEL_SUBDIR, pretrain
    wh, _ = instructions_wh
    runs = {g: pretrain(_pre_cfg(wh, tmp_path / str(g), max_steps=4, use_group=g)) for g in (True, False)}
    assert all(r["step"] == 4 for r in runs.values())
    trained = {g: GroupLlava.load(tmp_path / str(g) / MODEL_SUBDIR) for g in (True, False)}
    torch.manual_seed(0)  # the tiny profile's initial weights (build_model seeds with cfg.seed = 0)
    from osmf_core.models.gmllm.builders import build_tiny
    init = build_tiny(_pre_cfg(wh, tmp_path / "x").model, trained[False].tokenizer)
    mlp = lambda m: torch.cat([q.flatten() for q in m.group_mlp.parameters()])  # noqa: E731
    assert torch.equal(mlp(trained[False]), mlp(init))
    assert not torch.allclose(mlp(trained[True]), mlp(init))
    lm = lambda m: m.llava.lm_head.weight  # noqa: E731
    assert not torch.allclose(lm(trained[False]), lm(init))


def _tinted(seed, rgb):
    from osmf_core.world.images import to_png
    noise = np.random.default_rng(seed).random((32, 32, 3)) * 60
    return to_png(np.clip(noise + np.array(rgb) * 195, 0, 255).astype(np.uint8))


def _pairs(n, seed=0):
    """n pairs in which a reddish image (a) always beats a bluish one (b)."""
    return {"title": np.array(["Nova"] * n, dtype=object), "label": np.ones(n, dtype=np.int64),
            "image_a": np.array([_tinted(seed + i, (1, 0, 0)) for i in range(n)], dtype=object),
            "image_b": np.array([_tinted(seed + 100 + i, (0, 0, 1)) for i in range(n)], dtype=object),
            "group_features": np.array([np.ones(11 * TINY.group_dim, np.float32)] * n, dtype=object)}


@pytest.mark.parametrize("swap,pooling", [(False, "bilinear"), (True, "bilinear"), (True, "last"), (True, "patches")])
def test_the_bradley_terry_grm_is_symmetric_and_learns_which_image_wins(tiny, swap, pooling):
    from osmf_core.models.gmllm.grm import GRM
    from osmf_core.training.grm import pair_loss, pair_inputs
    torch.manual_seed(0)
    grm = GRM(tiny, pooling=pooling)
    n = 8
    batch, held_out = _pairs(n), _pairs(4, seed=50)
    opt = torch.optim.AdamW(grm.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(25):
        loss = pair_loss(grm, grm, batch, 64, "cpu", rng.permutation(n) < n // 2 if swap else None)
        loss.backward()
        opt.step()
        opt.zero_grad()
    with torch.no_grad():
        for b in (batch, held_out):
            k = len(b["label"])
            p_ab = torch.softmax(grm(**pair_inputs(grm, b, 64, "cpu")), -1)[:, 1].numpy()
            p_ba = torch.softmax(grm(**pair_inputs(grm, b, 64, "cpu", np.ones(k, bool))), -1)[:, 1].numpy()
            # each creative is scored alone: the order a pair is shown in cannot matter, swaps or not
            np.testing.assert_allclose(p_ab + p_ba, 1.0, atol=1e-5)
            assert (p_ab > 0.8).all(), (swap, p_ab)  # red beats blue, seen or new images, first or second


def test_score_candidates_orders_like_the_pairwise_probabilities(tiny):
    from osmf_core.models.gmllm.grm import GRM
    from osmf_core.training.grm import pair_inputs
    from osmf_core.models.gmllm.grm import score_candidates
    torch.manual_seed(1)
    grm = GRM(tiny).eval()
    torch.nn.init.normal_(grm.head.weight, std=1.0)  # heads that prefer some images
    torch.nn.init.normal_(grm.style.weight, std=1.0)
    images = [_png(i) for i in range(5)]
    g = np.ones(11 * TINY.group_dim, np.float32)
    r = score_candidates(grm, "Nova", g, images)
    assert r.shape == (5,) and np.isfinite(r).all() and np.ptp(r) > 1e-3
    i, j = np.meshgrid(np.arange(5), np.arange(5), indexing="ij")
    i, j = i[i != j], j[i != j]
    batch = {"title": np.array(["Nova"] * len(i), dtype=object), "label": np.ones(len(i), dtype=np.int64),
             "image_a": np.array([images[k] for k in i], dtype=object),
             "image_b": np.array([images[k] for k in j], dtype=object),
             "group_features": np.array([g] * len(i), dtype=object)}
    with torch.no_grad():
        p = torch.softmax(grm(**pair_inputs(grm, batch, 128, "cpu")), -1)[:, 1].numpy()
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-(r[i] - r[j]))), atol=1e-5)  # P(i beats j) = sigmoid(r_i - r_j)
    assert ((r[i] > r[j]) == (p > 0.5)).all()
    wins = np.array([p[i == k].mean() for k in range(5)])  # mean P(k beats the others): same order as r
    assert (np.argsort(wins) == np.argsort(r)).all()


def test_score_candidates_without_a_group(tiny):
    from osmf_core.models.gmllm.grm import GRM
    from osmf_core.models.gmllm.grm import score_candidates
    grm = GRM(tiny, use_group=False)
    r = score_candidates(grm, "Nova", np.zeros(0, np.float32), [_png(i) for i in range(3)])
    assert r.shape == (3,) and np.isfinite(r).all()
    assert score_candidates(grm, "Nova", np.zeros(0, np.float32), []).shape == (0,)


@pytest.mark.parametrize("pooling", ["last", "bilinear", "patches"])
def test_grm_save_load_keeps_its_heads(tiny, tmp_path, pooling):
    from osmf_core.models.gmllm.grm import GRM
    from osmf_core.models.gmllm.grm import score_candidates
    torch.manual_seed(2)
    grm = GRM(tiny, use_group=False, n_points=None, pooling=pooling)
    for p in grm.parameters():
        if p.dim() > 1 and p.shape[0] <= 16:  # the reward heads
            torch.nn.init.normal_(p)
    torch.nn.init.normal_(grm.head.weight)
    grm.save(tmp_path / "grm")
    back = GRM.load(tmp_path / "grm")
    assert back.pooling == pooling and not back.use_group
    images = [_png(i) for i in range(3)]
    np.testing.assert_allclose(score_candidates(back, "Nova", np.zeros(0), images),
                               score_candidates(grm, "Nova", np.zeros(0), images), atol=1e-5)


def test_grm_trains_with_deepspeed_from_the_gmllm_and_scores_held_out_pairs(instructions_wh, tmp_path):
    from osmf_core.models.gmllm.grm import GRM
    from osmf_core.training.gmllm import MODEL_SUBDIR, pretrain
    from osmf_core.training.grm import GRMConfig, pair_metrics, score_pairs, train_grm
    wh, summary = instructions_wh
    pretrain(_pre_cfg(wh, tmp_path / "gm", max_steps=2))
    s = train_grm(GRMConfig(warehouse=wh, gmllm=str(tmp_path / "gm" / MODEL_SUBDIR), out_dir=str(tmp_path / "grm"),
                            max_steps=4, batch_size=16, progress=False))
    assert s["step"] == 4 and s["rows"] == summary["grm_examples"]["train"]
    grm = GRM.load(tmp_path / "grm" / MODEL_SUBDIR)
    sc = score_pairs(grm, wh, s["run_date"], split="test")
    m = pair_metrics(sc["p_ab"], sc["p_ba"], sc["label"], sc["product_id"] * 1000 + sc["group_id"])
    assert m["pairs"] == summary["grm_examples"]["test"] and 0 <= m["pair_accuracy"] <= 1


def test_pair_metrics_on_a_known_case():
    from osmf_core.training.grm import pair_metrics
    k = pair_metrics(np.array([0.9, 0.2, 0.6]), np.array([0.1, 0.8, 0.6]), np.array([1, 1, 0]), np.array([0, 0, 1]), 1)
    assert k["pair_accuracy"] == pytest.approx(1 / 3) and k["per_group"] == {"0": 0.5, "1": 0.0}
    assert k["worst_group_accuracy"] == 0.0 and k["symmetry_error"] == pytest.approx(0.2 / 3)


def test_grm_training_killed_mid_run_resumes_and_ends_like_an_unbroken_run(tiny_models, tmp_path):
    from osmf_core.models.gmllm.grm import GRM
    from osmf_core.training.gmllm import MODEL_SUBDIR
    from osmf_core.training.grm import GRMConfig, train_grm
    wh, gm, _ = tiny_models
    cfg = lambda d: GRMConfig(warehouse=wh, gmllm=gm, out_dir=str(tmp_path / d), max_steps=6, save_every=2,  # noqa: E731
                              batch_size=8, progress=False)
    whole = train_grm(cfg("whole"))
    assert train_grm(cfg("broken"), stop_after=3)["stopped"]  # killed after step 3: the last checkpoint is step 2
    resumed = train_grm(cfg("broken"))
    assert whole["step"] == resumed["step"] == 6 and resumed["resumed_from"] == 2
    a, b = GRM.load(tmp_path / "whole" / MODEL_SUBDIR), GRM.load(tmp_path / "broken" / MODEL_SUBDIR)
    for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(p, q, atol=1e-6), n


def test_the_product_level_true_order_weighs_the_groups_by_size(instructions_wh):
    """Over all the product's viewers a creative's expected CTR is the size-weighted mean of its groups'."""
    from osmf_core.evaluation.figure3 import pair_ctrs, read_pairs, true_labels
    from osmf_core.data.audiences import audiences
    wh, built = instructions_wh
    run_date = built["run_date"]
    pairs = read_pairs(wh, run_date, "train")
    pid, a, b = int(pairs["product_id"][0]), int(pairs["creative_a"][0]), int(pairs["creative_b"][0])
    sizes = audiences(wh, run_date, [pid]).groupby("group_id").size()
    assert len(sizes) >= 2
    per_group = {k: np.full(len(sizes), v) for k, v in (("product_id", pid), ("creative_a", a), ("creative_b", b))}
    ga, gb = pair_ctrs(wh, run_date, {**per_group, "group_id": sizes.index.to_numpy()})
    one = {k: v[:1] for k, v in per_group.items()} | {"group_id": sizes.index.to_numpy()[:1]}
    pa, pb = pair_ctrs(wh, run_date, one, by_group=False)
    w = sizes.to_numpy() / sizes.sum()
    np.testing.assert_allclose([pa[0], pb[0]], [(w * ga).sum(), (w * gb).sum()], rtol=1e-9)
    assert true_labels(wh, run_date, one, by_group=False)[0] == int(pa[0] > pb[0])
    assert not np.allclose(ga, ga[0])  # the groups differ, so the weighting is what is tested
