"""Group-DPO (paper eq. 9): LoRA fine-tuning of the G-MLLM on group-wise preferences ranked by the frozen GRM.

A round (as CAIG does it, several of them):
  1. sample `samples` background prompts per (product, group) from the current policy, conditioned on G_{s,k};
  2. render each prompt around the product (the procedural renderer on the simulated world);
  3. rank the images with the frozen GRM in that group; the best and the worst form (y_w, y_l);
  4. train eq. 9 on the round's pairs with DeepSpeed, policy and reference both conditioned on G_{s,k}.
The reference is the same model with its LoRA adapters disabled (peft), so there is no second copy.
`robust` weights the loss of each (product, group) by exponentiated-gradient group weights (group-robust
preference optimisation), so the worst-served groups count more.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from osmf_core.data import catalog as C
from osmf_core.data.config import default_warehouse
from osmf_core.data.reader import run_of
from osmf_core.features.contexts import CONTEXT_TABLES, load_contexts
from osmf_core.models.gmllm.grm import GRM, score_candidates
from osmf_core.models.gmllm.head import scored
from osmf_core.models.gmllm.model import GroupLlava, to_device
from osmf_core.models.gmllm.policy import ADAPTER_SUBDIR, META_FILE, core_of, generate, policy_inputs
from osmf_core.rendering.procedural import ProceduralRenderer, RenderJob
from osmf_core.training.engine import EngineConfig, build_engine
from osmf_core.training.loop import fit, init_distributed
from osmf_core.training.robust import GroupWeights
from osmf_core.world import images

LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)"  # the LM's attention, not the vision tower


@dataclass
class DPOConfig:
    # data
    # feat.instructions (prompt-generation contexts), raw.products, feat.grm_examples; default $OSMF_WAREHOUSE, else ./warehouse (as the Spark jobs)
    warehouse: str = field(default_factory=default_warehouse)
    run_date: str = ""  # run of feat.instructions (default: the latest)
    # models
    gmllm: str = "runs/gmllm/model"  # the pre-trained G-MLLM (policy init and reference)
    grm: str = "runs/grm/model"  # the frozen reward model that ranks the samples
    # grm; or truth: rank by the simulator's true CTR in the group (a diagnostic ceiling the evaluation runs)
    reward: str = field(default="grm", metadata={"choices": ("grm", "truth")})
    # the policy reads the group token (--no-group: one prompt per product)
    use_group: bool = field(default=True, metadata={"flag": "group"})
    lora_r: int = 8
    lora_alpha: int = 16
    # sample-rank-train
    rounds: int = 2
    samples: int = 4  # prompts sampled per (product, group) and round
    temperature: float = 1.0
    max_new_tokens: int = 32
    min_margin: float = 0.0  # GRM score gap a (winner, loser) pair needs
    max_contexts: int = 0  # use only the first N (product, group) contexts (0 = all; for smoke runs)
    # optimisation
    deepspeed_config: str = "cluster/deepspeed/gmllm.json"
    engine: EngineConfig = field(default_factory=EngineConfig)
    beta: float = 0.5  # eq. 9's KL weight; 0.5 keeps the policy nearer the reference than 0.1 (docs/group_dpo.md)
    epochs: int = 2  # passes over each round's pairs
    batch_size: int = 8  # pairs per step
    lr: float = 5e-4
    robust: bool = False  # worst-group weighting of the loss (exponentiated-gradient group weights)
    robust_eta: float = 1.0  # step size of the group weights
    max_len: int = 384
    seed: int = 0
    # output
    out_dir: str = "runs/dpo"
    save_every: int = 50
    progress: bool = True

    def __post_init__(self):
        if min(self.rounds, self.samples - 1, self.epochs, self.batch_size, self.save_every, self.lora_r) < 1:
            raise ValueError("rounds, epochs, batch_size, save_every, lora_r must be >= 1 and samples >= 2")
        if self.reward not in ("grm", "truth"):
            raise ValueError(f"reward must be grm or truth, got {self.reward!r}")
        if self.beta <= 0 or self.lr <= 0 or self.temperature <= 0:
            raise ValueError("beta, lr and temperature must be > 0")


# ---------------------------------------------------------------------------------- eq. 9
def dpo_loss(pi_w, pi_l, ref_w, ref_l, beta: float, weights=None):
    """Eq. 9 per pair: -log sigma(beta (log pi(y_w)/ref(y_w) - log pi(y_l)/ref(y_l))), with the implicit
    rewards beta log pi/ref of winner and loser. Returns (loss, reward_w, reward_l); `weights` (summing to 1)
    make the loss a weighted sum instead of a mean."""
    reward_w, reward_l = beta * (pi_w - ref_w), beta * (pi_l - ref_l)
    losses = -torch.nn.functional.logsigmoid(reward_w - reward_l)
    loss = losses.mean() if weights is None else (losses * weights).sum()
    return loss, losses, reward_w.detach(), reward_l.detach()


# ---------------------------------------------------------------------------------- the policy
def add_lora(model: GroupLlava, cfg: DPOConfig):
    """The policy: the G-MLLM with LoRA adapters on the language model's attention; all else frozen."""
    from peft import LoraConfig, get_peft_model
    return get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                                            target_modules=LORA_TARGETS))


def sequence_logprob(model, inputs: dict) -> torch.Tensor:
    """Sum of log p(token) over each row's response tokens (labels != -100; response_inputs checks every row
    has some), from the forward pass with labels (the head's region: no logits kept)."""
    return model(**inputs).token_logprobs.sum(dim=1)


# ---------------------------------------------------------------------------------- contexts and ranking


def render_prompts(renderer, ctx: pd.DataFrame, prompts: list[list[str]], seed) -> list[list[bytes]]:
    """PNG of every sampled prompt drawn around its context's product."""
    jobs, shape = [], []
    for (_, row), ps in zip(ctx.iterrows(), prompts):
        shape.append(len(ps))
        jobs += [RenderJob.from_pngs(int(row["product_id"]), row["image"], row["mask"], p,
                                     (*seed, int(row["product_id"]), int(row["group_id"]), i)) for i, p in enumerate(ps)]
    pngs = [images.to_png(a) for a in renderer.render(jobs)]
    out, at = [], 0
    for n in shape:
        out.append(pngs[at:at + n])
        at += n
    return out


def preference_pairs(ctx: pd.DataFrame, prompts: list[list[str]], scores: list[np.ndarray], min_margin: float) -> pd.DataFrame:
    """(winner, loser) per context: the best and the worst scored distinct prompts, if their gap > min_margin."""
    rows = []
    for k, (ps, s) in enumerate(zip(prompts, scores)):
        w, lo = int(np.argmax(s)), int(np.argmin(s))
        if ps[w] != ps[lo] and s[w] - s[lo] > min_margin:
            rows.append((k, ps[w], ps[lo], float(s[w] - s[lo])))
    pairs = pd.DataFrame(rows, columns=["ctx", "chosen", "rejected", "grm_margin"])
    return pairs.join(ctx[["product_id", "group_id"]], on="ctx")


# ---------------------------------------------------------------------------------- training
def response_inputs(core: GroupLlava, rows, responses, use_group: bool, max_len: int, device) -> dict:
    """Model inputs of context rows and their responses, on `device`: encoded and checked on the CPU (on a GPU
    the check would read the device back), then moved."""
    inputs = policy_inputs(core, rows, responses, use_group, max_len, None)
    if not scored(inputs["labels"].numpy()).any(axis=1).all():
        raise ValueError("a response lost every token to max_len: raise max_len so prompts and answers fit")
    return to_device(inputs, device)


def policy_and_reference(model, policy, ctx: pd.DataFrame, pairs: pd.DataFrame, cfg: DPOConfig, device):
    """(pi_w, pi_l, ref_w, ref_l): log pi(y_w | s, G) and log pi(y_l | s, G) of a batch of pairs, the policy's
    through `model` (the DeepSpeed engine in training), the reference's with the adapters disabled and without
    grad; each one forward over winners and losers, both on the same inputs, encoded once."""
    rows = ctx.iloc[np.concatenate([pairs["ctx"].to_numpy()] * 2)]
    responses = pairs["chosen"].tolist() + pairs["rejected"].tolist()
    inputs = response_inputs(core_of(policy), rows, responses, cfg.use_group, cfg.max_len, device)
    with torch.no_grad(), policy.disable_adapter():
        ref = sequence_logprob(policy, inputs)
    pi = sequence_logprob(model, inputs)
    n = len(pairs)
    return pi[:n], pi[n:], ref[:n], ref[n:]


def dpo_step_loss(engine, policy, ctx, pairs: pd.DataFrame, cfg: DPOConfig, weights: GroupWeights | None):
    """Eq. 9 on a batch of pairs (weighted per group when `weights` is given)."""
    pi_w, pi_l, ref_w, ref_l = policy_and_reference(engine, policy, ctx, pairs, cfg, engine.device)
    keys = list(zip(pairs["product_id"], pairs["group_id"]))
    w = None if weights is None else to_device(  # through pinned memory: a plain copy to a GPU waits for it
        {"w": torch.tensor(weights.batch_weights(keys), dtype=torch.float32)}, engine.device)["w"]
    loss, losses, _, _ = dpo_loss(pi_w, pi_l, ref_w, ref_l, cfg.beta, w)
    if weights is not None:
        weights.observe(keys, losses)
    return loss


@torch.no_grad()
def reward_stats(policy, ctx: pd.DataFrame, pairs: pd.DataFrame, cfg: DPOConfig, batch_size: int = 32) -> dict:
    """Implicit-reward accuracy (r_w > r_l) and margin (r_w - r_l) overall and per (product, group)."""
    device = next(policy.parameters()).device
    rw, rl = [], []
    for lo in range(0, len(pairs), batch_size):
        logprobs = policy_and_reference(policy, policy, ctx, pairs.iloc[lo:lo + batch_size], cfg, device)
        _, _, a, b = dpo_loss(*logprobs, cfg.beta)
        rw.append(a.cpu().numpy())
        rl.append(b.cpu().numpy())
    rw, rl = (np.concatenate(x) if x else np.zeros(0) for x in (rw, rl))
    df = pairs.assign(correct=rw > rl, margin=rw - rl)
    per = df.groupby(["product_id", "group_id"])[["correct", "margin"]].mean()
    return {"pairs": int(len(df)), "reward_accuracy": float(df["correct"].mean()) if len(df) else float("nan"),
            "reward_margin": float(df["margin"].mean()) if len(df) else float("nan"),
            "worst_group_reward_accuracy": float(per["correct"].min()) if len(per) else float("nan"),
            "per_group": {f"{p}/{g}": {"accuracy": round(float(r.correct), 4), "margin": round(float(r.margin), 5)}
                          for (p, g), r in per.iterrows()}}


def grm_scorer(grm: GRM):
    """Scores of a context's candidates by the frozen GRM in the context's group."""
    return lambda row, prompts, pngs: score_candidates(grm, row["title"], row["group_features"] if grm.use_group else [],
                                                       pngs)


def sample_round(policy, score, renderer, ctx: pd.DataFrame, cfg: DPOConfig, round_no: int,
                 batch_size: int = 16) -> pd.DataFrame:
    """Steps 1-3 of a round: sample, render, rank (`score(row, prompts, pngs)`) -> (winner, loser) pairs."""
    core = core_of(policy)
    core.eval()
    prompts, scores = [], []
    for lo in tqdm(range(0, len(ctx), batch_size), desc=f"sample+rank round {round_no}", unit="batch",
                   disable=not cfg.progress):
        part = ctx.iloc[lo:lo + batch_size]
        ps = generate(core, part, cfg.use_group, cfg.samples, cfg.temperature, max_new_tokens=cfg.max_new_tokens, max_len=cfg.max_len,
                      seed=cfg.seed * 100_003 + round_no * 1_009 + lo)
        pngs = render_prompts(renderer, part, ps, (cfg.seed, round_no))
        for (_, row), p, imgs in zip(part.iterrows(), ps, pngs):
            prompts.append(p)
            scores.append(score(row, p, imgs))
    return preference_pairs(ctx, prompts, scores, cfg.min_margin)


def engine_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def run_group_dpo(cfg: DPOConfig, stop_after: int | None = None, scorer=None) -> dict:
    """All rounds of sample-rank-train (resuming a killed run); the adapters end in <out_dir>/adapter.
    Candidates are ranked by the frozen GRM, or with reward 'truth' by `scorer(contexts)`, a function
    (row, prompts, pngs) -> scores the caller builds (the evaluation's simulator-truth ceiling)."""
    rank, world = init_distributed()
    out = Path(cfg.out_dir)
    ctx = load_contexts(cfg.warehouse, cfg.run_date, split="train")
    if cfg.max_contexts:
        ctx = ctx.iloc[:cfg.max_contexts].reset_index(drop=True)
    torch.manual_seed(cfg.seed)
    policy = add_lora(GroupLlava.load(cfg.gmllm), cfg)
    if cfg.reward == "grm":
        grm = GRM.load(cfg.grm).to(engine_device())
        for p in grm.parameters():
            p.requires_grad_(False)
        score = grm_scorer(grm)
    elif scorer is None:
        raise ValueError("reward 'truth' ranks by the simulator's CTR: the caller passes that scorer "
                         "(osmf_core.evaluation.online.truth_scorer); training never reads the simulator")
    else:
        score = scorer(ctx)
    steps = cfg.rounds * cfg.epochs * max(1, len(ctx) // (cfg.batch_size * world))
    engine, _ = build_engine(policy, [p for p in policy.parameters() if p.requires_grad], cfg.deepspeed_config,
                             cfg.batch_size, cfg.lr, steps, cfg.engine)
    weights = GroupWeights(zip(ctx["product_id"], ctx["group_id"]), cfg.robust_eta) if cfg.robust else None
    renderer, history = ProceduralRenderer(), []
    for r in range(cfg.rounds):
        rdir = out / f"round{r}"
        done = rdir / "done.json"
        if done.is_file():  # a finished round: its pairs and final weights are on disk
            history.append(json.loads(done.read_text()))
            if not (out / f"round{r + 1}" / "done.json").is_file():
                tag = (rdir / "checkpoints" / "latest").read_text().strip()
                engine.load_checkpoint(str(rdir / "checkpoints"), tag=tag)
            continue
        pairs_file = rdir / "pairs.parquet"
        if pairs_file.is_file():  # sampled before a kill: the same pairs, so a resumed round sees the same batches
            pairs = pd.read_parquet(pairs_file)
        else:
            pairs = sample_round(policy, score, renderer, ctx, cfg, r)
            rdir.mkdir(parents=True, exist_ok=True)
            if rank == 0:
                pairs.to_parquet(pairs_file)
        before = reward_stats(policy, ctx, pairs, cfg) if len(pairs) else {}
        if rank == 0 and len(pairs) < cfg.batch_size * world:
            print(f"[group-dpo] round {r}: {len(pairs)} pairs, fewer than one batch of {cfg.batch_size} per rank: "
                  "no step this round (lower --batch-size or use more contexts)", flush=True)

        def batches(epoch: int, pairs=pairs, r=r):
            order = np.random.default_rng([cfg.seed, r, epoch]).permutation(len(pairs))[rank::world]
            for lo in range(0, len(order) - cfg.batch_size + 1, cfg.batch_size):
                yield pairs.iloc[order[lo:lo + cfg.batch_size]]

        fit_out = fit(engine, batches, lambda b: dpo_step_loss(engine, policy, ctx, b, cfg, weights), epochs=cfg.epochs,
                      out_dir=str(rdir), save_every=cfg.save_every, name=f"Group-DPO round {r}", progress=cfg.progress,
                      rank=rank, stop_after=stop_after)
        if fit_out["stopped"]:
            return fit_out
        engine.save_checkpoint(str(rdir / "checkpoints"), tag=f"step{fit_out['step']}", client_state={
            "step": fit_out["step"], "epoch": cfg.epochs, "batch_in_epoch": 0, "torch_rng": torch.get_rng_state()})
        after = reward_stats(policy, ctx, pairs, cfg) if len(pairs) else {}
        summary = {"round": r, "pairs": int(len(pairs)), "steps": fit_out["step"], "loss": fit_out["loss"],
                   "grm_margin": float(pairs["grm_margin"].mean()) if len(pairs) else float("nan"),
                   "before": {k: v for k, v in before.items() if k != "per_group"},
                   "after": {k: v for k, v in after.items() if k != "per_group"},
                   "per_group_after": after.get("per_group", {})}
        if weights is not None:
            summary["worst_groups"] = [str(k) for k in np.array(list(weights.keys))[np.argsort(-weights.alpha())[:5]]]
        history.append(summary)
        if rank == 0:
            done.write_text(json.dumps(summary, indent=2))
            print(f"[group-dpo] round {r}: {len(pairs)} pairs, loss {fit_out['loss'] or float('nan'):.4f}, "
                  f"reward accuracy {after.get('reward_accuracy', float('nan')):.3f}, "
                  f"margin {after.get('reward_margin', float('nan')):.4f}", flush=True)
    if rank == 0:
        policy.save_pretrained(str(out / ADAPTER_SUBDIR))
        meta = {"gmllm": cfg.gmllm, "use_group": cfg.use_group, "config": asdict(cfg),
                "rounds": [{k: v for k, v in h.items() if k != "per_group_after"} for h in history]}
        (out / META_FILE).write_text(json.dumps(meta, indent=2))
    return {"stopped": False, "rounds": history, "adapter": str(out / ADAPTER_SUBDIR)}


def resolve_run(cfg: DPOConfig) -> DPOConfig:
    """`cfg` with its run of feat.instructions (the latest when not given); ConfigError when a table is missing."""
    cfg.run_date = run_of(C.INSTRUCTIONS, cfg.warehouse, cfg.run_date, needs=CONTEXT_TABLES)
    return cfg


def train_and_report(cfg: DPOConfig) -> dict:
    out = run_group_dpo(cfg)
    print(f"Group-DPO: {len(out['rounds'])} rounds -> {out['adapter']}")
    return out
