"""Generation: one prompt and one image per (product, group), into gen.prompts, gen.creatives, image files
and the HTML gallery.

The policy is the pre-trained G-MLLM, with the Group-DPO adapters when given; its greedy prompt for each
(product, group) is rendered around the product (procedural renderer on the simulated world, or the
ControlNet-Inpaint pipeline), optionally scored by the GRM against the product's logged creatives, and on
the simulated world scored by the true expected CTR among the group's users.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pyspark.sql import SparkSession
from tqdm import tqdm

from osmf_core.data import catalog as C
from osmf_core.data.audiences import AUDIENCE_TABLES, audiences
from osmf_core.data.config import ConfigError
from osmf_core.data.reader import read_columns, run_of
from osmf_core.data.store import write_table
from osmf_core.features.contexts import CONTEXT_TABLES, load_contexts
from osmf_core.generation.gallery import group_descriptions, write_gallery
from osmf_core.models.gmllm.grm import GRM, win_probability
from osmf_core.models.gmllm.policy import ADAPTER_SUBDIR, META_FILE, greedy_prompts, load_policy
from osmf_core.rendering.inpaint import InpaintConfig, InpaintRenderer, from_local, tiny_pipeline
from osmf_core.rendering.procedural import ProceduralRenderer, RenderJob
from osmf_core.world import images
from osmf_core.world.styles import style_errors

ONE_SIZE_SEED = 1 << 30  # the one-size image's render seed in place of a group id (never a group's)


@dataclass
class GenerateConfig:
    run_date: str = ""  # regroup run whose groups get images (default: the latest of feat.instructions)
    gmllm: str = "runs/gmllm/model"  # pre-trained G-MLLM
    dpo: str = "runs/dpo"  # Group-DPO run (its adapter/ and dpo.json); empty: the pre-trained model alone
    grm: str = ""  # reward model to score each image against the product's logged creatives (empty: no score)
    renderer: str = "procedural"  # procedural (simulated world) or inpaint (ControlNet-Inpaint SD)
    sd_path: str = ""  # inpaint: local Stable Diffusion 1.5 inpainting directory (empty: tiny random pipeline)
    controlnet_path: str = ""  # inpaint: local ControlNet directory
    prompt: str = ""  # render this one prompt for every (product, group) instead of the policy's (a control arm)
    # the gallery's one-size image per product, beside its groups': the prompt of this one-size policy's Group-DPO
    # run (Table 3's one_size arm), or with "" of --dpo's policy without the group token
    one_size_dpo: str = ""
    products: int = 0  # only the first N products (0 = all)
    images_dir: str = "reports/gallery/img"  # image files: <images_dir>/<run_date>/<product>_<group>.png
    gallery: str = "reports/gallery/index.html"
    seed: int = 0

    def __post_init__(self):
        if self.renderer not in ("procedural", "inpaint"):
            raise ConfigError(f"--renderer must be procedural or inpaint, got {self.renderer!r}")
        if bool(self.sd_path) != bool(self.controlnet_path):
            raise ConfigError("--sd-path and --controlnet-path go together (both empty: the tiny pipeline)")
        if self.prompt:
            errors = style_errors(self.prompt)
            if errors:
                raise ConfigError(f"--prompt: {errors[0]}")
            return
        if not Path(self.gmllm).is_dir():
            raise ConfigError(f"no G-MLLM at {self.gmllm}: run make pretrain-gmllm")
        if self.dpo and not (Path(self.dpo) / ADAPTER_SUBDIR).is_dir():
            raise ConfigError(f"no Group-DPO adapters in {self.dpo}: run make group-dpo (or --dpo '' for the pre-trained model)")
        if self.one_size_dpo and not (Path(self.one_size_dpo) / ADAPTER_SUBDIR).is_dir():
            raise ConfigError(f"no Group-DPO adapters in {self.one_size_dpo} (--one-size-dpo)")
        if self.products < 0:
            raise ConfigError("--products must be >= 0")


def model_version(cfg: GenerateConfig) -> str:
    """'pretrained-<hash>' or 'dpo-<hash>': a hash of the weights the prompts come from ('fixed-<hash>' of
    the prompt for a fixed prompt)."""
    h = hashlib.sha1()
    if cfg.prompt:
        return f"fixed-{hashlib.sha1(cfg.prompt.encode()).hexdigest()[:10]}"
    files = [Path(cfg.gmllm) / "group_mlp.pt"] + (sorted((Path(cfg.dpo) / ADAPTER_SUBDIR).glob("*.safetensors"))
                                                  if cfg.dpo else [])
    for f in files:
        h.update(f.read_bytes())
    return f"{'dpo' if cfg.dpo else 'pretrained'}-{h.hexdigest()[:10]}"


def make_renderer(cfg: GenerateConfig):
    if cfg.renderer == "procedural":
        return ProceduralRenderer()
    if cfg.sd_path:
        import torch
        cuda = torch.cuda.is_available()
        pipe = from_local(cfg.sd_path, cfg.controlnet_path, device="cuda" if cuda else None,
                          dtype=torch.float16 if cuda else None)
        return InpaintRenderer(pipe, InpaintConfig(steps=30))
    return InpaintRenderer(tiny_pipeline(seed=cfg.seed), InpaintConfig())


def logged_creatives(warehouse: str, products) -> dict[int, list[bytes]]:
    keep = set(int(p) for p in products)
    out: dict[int, list[bytes]] = {}
    for g in read_columns(C.CREATIVES, warehouse, ["product_id", "image"]):
        for p, img in zip(g["product_id"], g["image"]):
            if int(p) in keep:
                out.setdefault(int(p), []).append(img)
    return out


def load_run_policy(cfg: GenerateConfig, run: str):
    """The pre-trained G-MLLM with the adapters of Group-DPO run `run` (none: the pre-trained model alone)."""
    return load_policy(cfg.gmllm, str(Path(run) / ADAPTER_SUBDIR) if run else None)


def policy_prompts(cfg: GenerateConfig, ctx, policy) -> list[str]:
    """`policy`'s (--dpo's) greedy prompt for every context row (batched)."""
    use_group = json.loads((Path(cfg.dpo) / META_FILE).read_text())["use_group"] if cfg.dpo else True
    return greedy_prompts(policy, ctx, use_group)


def one_size_prompts(cfg: GenerateConfig, first, policy) -> tuple[dict[int, str], str]:
    """({product: the one prompt it shows every group}, where it came from) for `first`, one context row per
    product: the fixed --prompt, the one-size policy of --one-size-dpo, or `policy` (--dpo's) without the group
    token."""
    if cfg.prompt:
        return {int(p): cfg.prompt for p in first["product_id"]}, "the fixed prompt"
    if cfg.one_size_dpo:
        policy, source = load_run_policy(cfg, cfg.one_size_dpo), f"one-size policy {cfg.one_size_dpo}"
    else:
        source = "the same policy without the group token"
    return dict(zip(first["product_id"].astype(int), greedy_prompts(policy, first, use_group=False))), source


def generate_creatives(spark: SparkSession, cfg: GenerateConfig, warehouse: str, log=print, simulated_ctr=None) -> dict:
    """Prompts, images, gen tables and the gallery of one regroup run. `simulated_ctr(members, ctx)`, when
    given (on a simulated world, by the evaluation), fills each image's simulated CTR in its group."""
    run_date = run_of(C.INSTRUCTIONS, warehouse, cfg.run_date, needs=(*CONTEXT_TABLES, *AUDIENCE_TABLES, C.CREATIVES))
    ctx = load_contexts(warehouse, run_date)
    if cfg.products:
        ctx = ctx[ctx["product_id"].isin(sorted(ctx["product_id"].unique())[:cfg.products])].reset_index(drop=True)
    version = model_version(cfg)
    policy = None if cfg.prompt else load_run_policy(cfg, cfg.dpo)  # loaded once: group and one-size prompts
    ctx = ctx.assign(prompt=[cfg.prompt] * len(ctx) if cfg.prompt else policy_prompts(cfg, ctx, policy))
    jobs = [RenderJob.from_pngs(int(r.product_id), r.image, r.mask, r.prompt, (cfg.seed, int(r.product_id), int(r.group_id)))
            for r in ctx.itertuples()]
    renderer = make_renderer(cfg)
    rendered = renderer.render(jobs, progress=True)
    folder = Path(cfg.images_dir) / str(run_date)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for r, img in zip(ctx.itertuples(), rendered):
        paths.append(str(folder / f"{r.product_id}_{r.group_id}.png"))
        Path(paths[-1]).write_bytes(images.to_png(img))
    first = ctx.drop_duplicates("product_id")
    one_size, source = one_size_prompts(cfg, first, policy)
    one_imgs = renderer.render([RenderJob.from_pngs(int(r.product_id), r.image, r.mask, one_size[int(r.product_id)],
                                                              (cfg.seed, int(r.product_id), ONE_SIZE_SEED)) for r in first.itertuples()])
    one_paths = {}
    for r, img in zip(first.itertuples(), one_imgs):
        one_paths[int(r.product_id)] = str(folder / f"{r.product_id}_one_size.png")
        Path(one_paths[int(r.product_id)]).write_bytes(images.to_png(img))
    ctx = ctx.assign(image_path=paths, grm_score=np.nan, sim_ctr=np.nan, one_size_ctr=np.nan,
                     one_size_prompt=[one_size[int(p)] for p in ctx["product_id"]],
                     one_size_path=[one_paths[int(p)] for p in ctx["product_id"]])
    if cfg.grm:
        grm = GRM.load(cfg.grm)
        logged = logged_creatives(warehouse, ctx["product_id"].unique())
        ctx["grm_score"] = [win_probability(grm, r.title, r.group_features, images.to_png(img), logged[int(r.product_id)])
                            for r, img in tqdm(zip(ctx.itertuples(), rendered), total=len(ctx), desc="GRM scores")]
    members = audiences(warehouse, run_date, ctx["product_id"].unique())
    if simulated_ctr is not None:  # each image's CTR in the group, and the one-size image's in the same group
        ctx["sim_ctr"] = simulated_ctr(members, ctx)
        ctx["one_size_ctr"] = simulated_ctr(members, ctx.assign(prompt=ctx["one_size_prompt"]))
    descriptions = group_descriptions(members)
    ctx["description"] = [descriptions.get((int(p), int(g)), "") for p, g in zip(ctx["product_id"], ctx["group_id"])]

    day = dt.date.fromisoformat(str(run_date))
    where = f"run_date = '{day.isoformat()}' AND model_version = '{version}'"
    base = ctx.assign(run_date=day, model_version=version)
    write_table(spark.createDataFrame(base.assign(prompt_idx=0)[C.PROMPTS.column_names], C.PROMPTS.schema),
                C.PROMPTS, warehouse, replace_where=where)
    gen = base[C.GENERATED.column_names].astype({"grm_score": "float64", "sim_ctr": "float64"})
    write_table(spark.createDataFrame(gen.replace({np.nan: None}), C.GENERATED.schema), C.GENERATED, warehouse,
                replace_where=where)
    page = write_gallery(ctx, cfg.gallery, title=f"OSMF creatives per group, run {day}, model {version}",
                         one_size_source=source)
    summary = {"run_date": day.isoformat(), "model_version": version, "images": len(ctx),
               "products": int(ctx["product_id"].nunique()), "distinct_prompts": int(ctx["prompt"].nunique()),
               "mean_sim_ctr": float(ctx["sim_ctr"].mean()), "mean_one_size_ctr": float(ctx["one_size_ctr"].mean()),
               "gallery": str(page)}
    log(f"[generate] {len(ctx)} images for {summary['products']} products ({summary['distinct_prompts']} distinct "
        f"prompts), mean simulated CTR {summary['mean_sim_ctr']:.5f} (one-size image in the same groups: "
        f"{summary['mean_one_size_ctr']:.5f}); gallery {page}")
    return summary
