"""PAAG: the model, its petastorm input path, DeepSpeed training with resumption, AUROC, e_u|t serving."""
import dataclasses
import tracemalloc

import numpy as np
import pytest
import torch
from pyspark.sql import functions as F
from sklearn.metrics import roc_auc_score

from osmf_core.data import catalog as C
from osmf_core.models.paag import PAAG, RUNGS, _masked_mean
from osmf_core.data.store import read_table
from osmf_core.data.reader import EXAMPLE_FIELDS, FeatureBank, example_batches
from osmf_core.training.paag import MODEL_FILE, TrainConfig, auroc, train
from osmf_core.models.embedder import PAAGEmbedder, distinct_rows
from osmf_core.models.paag import load_model

from conftest import TINY_MODEL


def _batch(n=8, tokens=5, patches=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    attrs = torch.stack([torch.randint(0, card, (n,), generator=g) for card, _ in C.USER_ATTRIBUTES.values()], 1)
    title, patch = torch.randn(n, tokens, 32, generator=g), torch.randn(n, patches, 16, generator=g)
    tmask = torch.ones(n, tokens, dtype=torch.bool)
    tmask[:, -1] = False
    return attrs, title, tmask, patch, torch.ones(n, patches, dtype=torch.bool)


@pytest.mark.parametrize("rung", RUNGS)
def test_forward_and_backward_of_every_rung(rung):
    model = PAAG(dataclasses.replace(TINY_MODEL, rung=rung))
    logits = model(*_batch())
    assert logits.shape == (8,) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert model.image_proj.weight.grad.abs().sum() > 0
    used_user = model.attr_emb[0].weight.grad is not None and model.attr_emb[0].weight.grad.abs().sum() > 0
    assert used_user == (rung != "I")
    used_ui = model.ca_image.attn.in_proj_weight.grad is not None
    assert used_ui == (rung == "full")


def _interaction_rows(n, seed):
    """Clicks that depend only on user x creative: clicked when the user's gender equals the image's style
    bit. Neither the user nor the creative alone says anything about the click."""
    attrs, title, tmask, patch, pmask = _batch(n=n, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    style = torch.randint(0, 2, (n,), generator=g)
    patch[:, :, 0] = style[:, None].float() * 2 - 1  # the style bit, seen in every patch
    gender = attrs[:, list(C.USER_ATTRIBUTES).index("gender")]
    return (attrs, title, tmask, patch, pmask), (gender == style).float()


def _trained_on_interaction(rung: str) -> PAAG:
    torch.manual_seed(0)
    model = PAAG(dataclasses.replace(TINY_MODEL, rung=rung, dropout=0.0))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(300):
        x, y = _interaction_rows(256, seed=step)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(*x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


@pytest.mark.parametrize("rung,learns", [("full", True), ("I+U+T+UT", False)])
def test_only_the_creative_aware_user_learns_a_user_x_creative_interaction(rung, learns):
    model = _trained_on_interaction(rung)
    x, y = _interaction_rows(2048, seed=10_000)
    with torch.no_grad():
        score = auroc(model(*x).numpy(), y.numpy())
    # the full model's gated CA makes the logit bilinear in e_u|t and the image: it separates the clicks;
    # without e_u|c the logit is a sum of a user term and product terms, which cannot
    assert (score > 0.95) if learns else (score < 0.6), score


def test_preference_profiles_group_users_by_the_creative_they_prefer():
    """On clicks that depend only on gender x an image style bit, clustering each user's scores over two
    creatives (one per style) finds the genders; the regroup clusters these profiles."""
    from sklearn.metrics import adjusted_rand_score
    from osmf_core.grouping.kmeans import ClusterConfig, cluster_products
    model = _trained_on_interaction("full")
    (attrs, title, tmask, patch, pmask), _ = _interaction_rows(600, seed=20_000)
    creatives = patch[:2].clone()
    creatives[0, :, 0], creatives[1, :, 0] = -1.0, 1.0  # style bit 0 and 1
    title, tmask = title[:1].expand(600, -1, -1), tmask[:1].expand(600, -1)  # one product
    with torch.no_grad():
        eut = model.product_aware(attrs, title, tmask)
        scores = model.creative_scores(eut, model.patch_tokens(creatives), pmask[:2])
        # the same numbers as the full model's logit minus its image and title heads, creative by creative
        for c in range(2):
            full = model(attrs, title, tmask, creatives[c:c + 1].expand(600, -1, -1), pmask[:1].expand(600, -1))
            v, t = model.patch_tokens(creatives[c:c + 1]), model.title_tokens(title[:1])
            rest = model.h_v(_masked_mean(v, pmask[:1]))[:, 0] + model.h_t(_masked_mean(t, tmask[:1]))[:, 0]
            torch.testing.assert_close(scores[:, c], full - rest, atol=1e-5, rtol=1e-5)
    gender = attrs[:, list(C.USER_ATTRIBUTES).index("gender")].numpy()
    profile = (scores - scores.mean(1, keepdim=True)).numpy()
    res = cluster_products([profile], ClusterConfig(k_max=3))[0]
    assert res.k_star == 2 and adjusted_rand_score(gender, res.labels) > 0.9


def test_feature_pca_whitens_the_frozen_features_as_scikit_learn_does():
    from sklearn.decomposition import PCA
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(16, 16)) * np.linspace(3, 0.1, 16)[:, None]
    patches = (rng.normal(size=(300, 4, 16)) @ mix + 5).astype(np.float32)
    pmask = rng.random((300, 4)) < 0.8
    title = rng.normal(size=(50, 5, 32)).astype(np.float32)
    tmask = np.ones((50, 5), bool)
    model = PAAG(dataclasses.replace(TINY_MODEL, feature_pca=6))
    model.set_feature_stats(title, tmask, patches, pmask, base_rate=0.1)
    valid = patches[pmask].astype(np.float64)
    z = (valid - valid.mean(0)) / valid.std(0, ddof=1)
    ours = (torch.from_numpy(z).float() @ model.image_pca).numpy()
    ref = PCA(6, whiten=True).fit_transform(z)
    assert ours.shape == (len(valid), 6) and model.image_proj.in_features == 6
    np.testing.assert_allclose(np.abs(ours), np.abs(ref), atol=1e-3)
    np.testing.assert_allclose(np.cov(ours.T), np.eye(6), atol=1e-3)


def test_a_model_saved_before_the_fusion_switch_loads_as_the_additive_block(tmp_path):
    old = PAAG(dataclasses.replace(TINY_MODEL, fusion="add", feature_pca=0)).eval()
    cfg = {k: v for k, v in old.cfg.to_dict().items() if k not in ("fusion", "feature_pca")}
    torch.save({"state_dict": old.state_dict(), "model": cfg, "text_encoder": "tiny", "image_encoder": "tiny"},
               tmp_path / MODEL_FILE)
    model, _ = load_model(tmp_path / MODEL_FILE)
    assert model.cfg.fusion == "add" and model.cfg.feature_pca == 0
    with torch.no_grad():
        torch.testing.assert_close(model(*_batch()), old(*_batch()))


@pytest.mark.parametrize("fusion", ["gate", "add"])
def test_attention_folded_once_equals_the_attention_layer(fusion):
    """The regroup's path (a title's or creative's tokens folded into the attention once for all users,
    CrossAttention.fold and attend) against nn.MultiheadAttention in CrossAttention.forward, which projects them again
    for every (user, tokens) pair: the same e_u|t, and the same score of every user for every creative, with
    a padded token in each set."""
    torch.manual_seed(1)
    model = PAAG(dataclasses.replace(TINY_MODEL, fusion=fusion)).eval()
    attrs, title, tmask, patch, pmask = _batch(n=6, tokens=5, patches=4)
    pmask[:, 0] = False
    with torch.no_grad():
        u, t, v = model.user_embedding(attrs), model.title_tokens(title), model.patch_tokens(patch)
        for i in range(len(u)):  # each title folded once (CrossAttention.fold), then any query attends to it
            torch.testing.assert_close(model.ca_title.attend(u, model.ca_title.fold(t[i], tmask[i]))[i],
                                       model.ca_title(u, t, tmask)[i])
        eut = model.ca_title(u, t, tmask)
        n, m = len(eut), len(v)  # every user against every creative, through the attention layer pair by pair
        pairwise = model.h_u(model.ca_image(eut.repeat_interleave(m, 0), v.repeat(n, 1, 1), pmask.repeat(n, 1)))
        scores = model.creative_scores(eut, v, pmask)
    assert scores.shape == (n, m)
    torch.testing.assert_close(scores, pairwise[:, 0].view(n, m))
    assert scores.std(1).min() > 0  # the creatives score differently: the comparison is not between constants


@pytest.mark.parametrize("high, width", [(5, 20), (2 ** 40, 3)])  # radices' product in int64, and beyond it
def test_distinct_attribute_rows_are_numpys_unique_rows(high, width):
    codes = np.random.default_rng(width).integers(0, high, (3000, width))
    codes[1000:1500] = codes[:500]  # repeated users
    distinct, inverse = distinct_rows(codes)
    want, want_inverse = np.unique(codes, axis=0, return_inverse=True)
    np.testing.assert_array_equal(distinct, want)
    np.testing.assert_array_equal(inverse.reshape(-1), want_inverse.reshape(-1))
    assert len(distinct) < len(codes)


def test_distinct_rows_of_int32_codes_keep_their_type_and_make_no_int64_copy_of_them():
    """The regroup's codes arrive as int32 (Arrow): the keys are built a column at a time, so the call
    holds no (B, 20) int64 copy of them (twice the codes' bytes)."""
    codes = np.random.default_rng(1).integers(0, 7, (100_000, 20)).astype(np.int32)
    codes[50_000:] = codes[:50_000]  # every user twice: 50,000 distinct rows
    tracemalloc.start()
    distinct, inverse = distinct_rows(codes)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    want, want_inverse = np.unique(codes, axis=0, return_inverse=True)
    assert distinct.dtype == np.int32 and len(distinct) == 50_000
    np.testing.assert_array_equal(distinct, want)
    np.testing.assert_array_equal(inverse.reshape(-1), want_inverse.reshape(-1))
    # the distinct rows themselves (half the codes) and a few int64 per row (keys, sort order, inverse);
    # one int64 copy of the codes alone would be 2x codes.nbytes
    assert peak < distinct.nbytes + 6 * 8 * len(codes) < 2 * codes.nbytes


def test_product_aware_embedding_depends_on_user_and_product():
    torch.manual_seed(0)
    model = PAAG(TINY_MODEL).eval()
    attrs, title, tmask, _, _ = _batch(n=2)
    same_user = attrs[[0, 0]]
    e = model.product_aware(same_user, title, tmask)  # one user, two products
    assert (e[0] - e[1]).abs().max() > 1e-3
    same_title, same_mask = title[[0, 0]], tmask[[0, 0]]
    e = model.product_aware(attrs, same_title, same_mask)  # two users, one product
    assert (e[0] - e[1]).abs().max() > 1e-3
    # the attention really uses the tokens: with the product's tokens changed, e_u|t changes
    shifted = model.product_aware(attrs, same_title + 1.0, same_mask)
    assert (shifted - e).abs().max() > 1e-3


def test_petastorm_yields_exactly_the_rows_of_the_table(spark, paag_wh):
    table = read_table(spark, C.PAAG_EXAMPLES, paag_wh)
    for split in ("train", "test"):
        part = table.where(F.col("split") == split)
        want = part.agg(F.count("*"), F.sum("impression_id"), F.sum(F.col("clicked") * F.col("age"))).first()
        for seed in (None, 3):
            rows = list(example_batches(paag_wh, split, 100, seed=seed, buffer_rows=500))
            cols = {f: np.concatenate([b[f] for b in rows]) for f in EXAMPLE_FIELDS}
            assert len(cols["clicked"]) == want[0]
            assert int(cols["impression_id"].sum()) == want[1]
            assert int((cols["clicked"] * cols["age"]).sum()) == want[2]
            assert len(np.unique(cols["impression_id"])) == want[0]
    shuffled = next(example_batches(paag_wh, "train", 100, seed=3, buffer_rows=500))["impression_id"]
    plain = next(example_batches(paag_wh, "train", 100, seed=None))["impression_id"]
    assert not np.array_equal(shuffled, plain)


def test_feature_bank_covers_every_product_and_creative(spark, paag_wh):
    bank = FeatureBank.load(paag_wh, "tiny", "tiny")
    assert len(bank.product_ids) == read_table(spark, C.PRODUCTS, paag_wh).count()
    assert len(bank.creative_ids) == read_table(spark, C.CREATIVES, paag_wh).count()
    title, mask = bank.titles(bank.product_ids[:3])
    assert title.shape[0] == 3 and mask.any(1).all() and (title[~mask] == 0).all()
    with pytest.raises(KeyError, match="no features"):
        bank.images(np.array([-5]))


def _cfg(wh, out, **kw):
    return TrainConfig(warehouse=wh, text_encoder="tiny", image_encoder="tiny", model=TINY_MODEL, epochs=1,
                       batch_size=256, lr=5e-3, out_dir=str(out), save_every=3, progress=False, **kw)


def test_deepspeed_steps_lower_the_loss_on_a_fixed_batch(paag_wh):
    import deepspeed

    from osmf_core.training.paag import _ds_config, _tensors, init_distributed
    init_distributed()
    cfg = _cfg(paag_wh, "unused")
    bank = FeatureBank.load(paag_wh, "tiny", "tiny")
    torch.manual_seed(0)
    model = PAAG(dataclasses.replace(TINY_MODEL, dropout=0.0))
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=_ds_config(cfg))
    batch = next(example_batches(paag_wh, "train", 256, seed=1))
    inputs, labels = _tensors(batch, bank, engine.device)
    before = {k: v.detach().clone() for k, v in engine.module.state_dict().items()}
    losses = []
    for _ in range(5):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(engine(*inputs), labels)
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    changed = [k for k, v in engine.module.state_dict().items() if not torch.equal(v, before[k])]
    assert "user_mlp.0.weight" in changed and "ca_image.attn.in_proj_weight" in changed


def test_a_killed_run_resumes_at_its_checkpoint_and_ends_where_an_unbroken_run_ends(paag_wh, tmp_path):
    whole = train(_cfg(paag_wh, tmp_path / "whole", max_steps=8))
    assert whole["step"] == 8
    killed = train(_cfg(paag_wh, tmp_path / "broken", max_steps=8), stop_after=5)  # dies after step 5
    assert killed["stopped"] and not (tmp_path / "broken" / MODEL_FILE).exists()
    resumed = train(_cfg(paag_wh, tmp_path / "broken", max_steps=8))
    assert resumed["resumed_from"] == 3 and resumed["step"] == 8  # the checkpoint of step 3
    a, _ = load_model(tmp_path / "whole" / MODEL_FILE)
    b, _ = load_model(tmp_path / "broken" / MODEL_FILE)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(x, y, atol=1e-6), name


def test_embedder_serves_product_aware_user_embeddings(spark, paag_wh, tmp_path):
    train(_cfg(paag_wh, tmp_path, max_steps=2))
    emb = PAAGEmbedder(tmp_path / MODEL_FILE, paag_wh)
    attrs = np.ones((4, 20), dtype=np.int64)
    pids = emb.bank.product_ids[[0, 1, 0, 1]]
    attrs[2:, C.USER_ATTRIBUTES.__len__() - 1] = 0
    out = emb(attrs, pids)
    assert out.shape == (4, TINY_MODEL.d) and out.dtype == np.float32
    assert np.abs(out[0] - out[1]).max() > 1e-4 and np.abs(out[0] - out[2]).max() > 1e-4
    title, mask = emb.bank.titles(pids)  # the cached title projection gives the model's own e_u|t
    with torch.no_grad():
        direct = emb.model.product_aware(torch.from_numpy(attrs), torch.from_numpy(title), torch.from_numpy(mask))
    np.testing.assert_allclose(out, direct.numpy(), atol=1e-5)
    np.testing.assert_array_equal(emb(attrs.astype(np.int32), pids), out)  # the codes as Arrow gives them
    # products of 2 rows counted large: their rows embedded step by step, not through the shared distinct rows
    np.testing.assert_allclose(emb(attrs, pids, shared_below=2), out, rtol=0, atol=1e-6)
    # preference profiles: each row's scores over its product's creatives (id order), centred, zero-padded
    prof_emb = PAAGEmbedder(tmp_path / MODEL_FILE, paag_wh, profiles=True)
    creatives = read_table(spark, C.CREATIVES, paag_wh).select("creative_id", "product_id").toPandas()
    assert prof_emb.width == creatives.groupby("product_id").size().max()
    prof = prof_emb.profile(out, pids, pairs_per_call=3)  # chunks smaller than one product's rows
    assert prof.shape == (4, prof_emb.width) and prof.dtype == np.float32
    for i, pid in enumerate(pids):
        ids = np.sort(creatives.loc[creatives.product_id == pid, "creative_id"].to_numpy())
        patches, pmask = prof_emb.bank.images(ids)
        with torch.no_grad():
            s = emb.model.creative_scores(direct[i:i + 1], emb.model.patch_tokens(torch.from_numpy(patches)),
                                          torch.from_numpy(pmask))[0].numpy()
        np.testing.assert_allclose(prof[i, :len(ids)], s - s.mean(), atol=1e-5)
        assert (prof[i, len(ids):] == 0).all() and abs(prof[i].sum()) < 1e-4


def test_auroc_equals_scikit_learn_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.random(2000) < 0.1
    scores = np.round(rng.random(2000) + labels * 0.3, 1)  # many ties
    assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    with pytest.raises(ValueError, match="both"):
        auroc([0.1, 0.2], [1, 1])


def test_a_corrupt_checkpoint_is_skipped_with_a_message(paag_wh, tmp_path, capsys):
    from osmf_core.training.loop import CHECKPOINTS
    out = tmp_path / "run"
    train(_cfg(paag_wh, out, max_steps=8), stop_after=7)  # checkpoints at steps 3 and 6, then killed
    ckpt = out / CHECKPOINTS
    assert (ckpt / "latest").read_text().strip() == "step6"
    states = ckpt / "step6" / "mp_rank_00_model_states.pt"
    states.write_bytes(states.read_bytes()[: states.stat().st_size // 2])  # a torn write
    (ckpt / "step9").mkdir()  # a save that died before `latest` was updated
    capsys.readouterr()
    resumed = train(_cfg(paag_wh, out, max_steps=8))
    err = capsys.readouterr().err
    assert "skipping checkpoint step9: newer than `latest`" in err
    assert "skipping checkpoint step6: mp_rank_00_model_states.pt does not load" in err
    assert resumed["resumed_from"] == 3 and resumed["step"] == 8


def test_the_ablation_reuses_a_model_only_when_it_was_trained_as_asked(tmp_path):
    from osmf_core.evaluation.paag import reusable_model as _reusable
    from osmf_core.training.paag import save_model
    cfg = TrainConfig(model=TINY_MODEL, out_dir=str(tmp_path), seed=3)
    path = tmp_path / MODEL_FILE
    assert _reusable(path, cfg) is None
    saved = PAAG(cfg.model)
    save_model(saved, cfg, path)
    reused = _reusable(path, cfg)
    assert reused is not None and all(torch.equal(v, saved.state_dict()[k]) for k, v in reused.state_dict().items())
    assert _reusable(path, dataclasses.replace(cfg, epochs=cfg.epochs + 1)) is None
    assert _reusable(path, dataclasses.replace(cfg, seed=4)) is None
    assert _reusable(path, dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, rung="I"))) is None
