"""How every G-MLLM training job (pre-training, GRM, Group-DPO) wraps its model in a DeepSpeed engine: one
place that chooses the ZeRO stage, the precision, the optimizer and compilation for the machine it runs on.

  ZeRO          one process (one GPU, or the CPU): none (stage 0). One GPU holds every gradient and optimizer
                state anyway, so ZeRO-2's gradient hooks, bucketing and flat partitions only cost time. Nor does
                one process all-reduce its gradients (DeepSpeed's stage 0 would copy every gradient into flat
                buffers, reduce them over a group of one and copy them back), and it clips them with torch's
                multi-tensor norm (DeepSpeed's stage-0 clipping takes one norm per parameter and waits for the
                GPU twice a step).
                Several processes: the stage of the DeepSpeed JSON (cluster/deepspeed/: ZeRO-2 on one node,
                ZeRO-3 across nodes). --zero-stage overrides both.
  precision     auto: bf16 on a GPU that has it, else fp32. bf16 without ZeRO is torch autocast over the fp32
                weights (the weights are the fp32 master copy; matmuls run in bf16); with ZeRO, DeepSpeed's
                bf16 optimizer (bf16 weights, fp32 master partitions).
  optimizer     the JSON's AdamW as torch.optim.AdamW, fused (one kernel for every tensor) on a GPU. One process
                with the fused optimizer clips inside its step (one_process_step): one pass over the gradients fewer.
  compile       on by default on a GPU, off on the CPU (CI, the demo: the step stays as it was). Scope `layers`
                (the default): each transformer layer compiled alone (regional compilation: the layers of a
                model share one graph, so compiling takes the time of one layer; measured on a GPU,
                docs/benchmarks.md), and so are the head with its loss and the small profile's frozen
                vision trunk (modules that set `compile_region`: one graph each, not yet run on a GPU); the
                rest (embeddings, projector, group token) eager. Scope `model`:
                DeepSpeed's engine.compile, the whole trained module as one graph (dynamic shapes: batches
                differ in length), so nothing in the forward reads the GPU back and the CPU queues steps
                ahead; a 1.7B bench run with it did not finish within its 200 s on an H100 (where the time
                went was not recorded), nor compiling within the 102 s an H200 call left it, and its step is
                not measured yet, so it stays opt-in.
  timers        DeepSpeed's throughput timer off: it waits for the GPU at the start and end of every step,
                so the CPU could never queue a step ahead (the jobs time their steps themselves).
  mode          torch.compile's mode (--compile-mode): default; reduce-overhead replays each compiled region as
                CUDA graphs (fewer launches where the CPU cannot keep the device busy; 1.05x at 1.7B, batch 16,
                on an H200, while the step still waited for the device twice; docs/benchmarks.md).
  checkpointing activation checkpointing in the language model: recomputes each layer in the backward pass,
                so larger batches fit (about a third more compute).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from osmf_core.training.loop import ds_config

PRECISIONS = ("auto", "fp32", "bf16")
COMPILE_SCOPES = ("model", "layers")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs")  # torch.compile's modes
LAYER_SUFFIXES = ("DecoderLayer", "EncoderLayer")  # transformers' names of a model's repeated block


@dataclass
class EngineConfig:
    # engine (osmf_core.training.engine)
    precision: str = field(default="auto", metadata={"choices": PRECISIONS})  # auto: bf16 on a GPU that has it, else fp32
    compile: bool | None = None  # torch.compile the model (default: on a GPU, off on a CPU)
    compile_scope: str = field(default="layers", metadata={"choices": COMPILE_SCOPES})  # layers: each transformer layer; model: the whole trained module
    compile_mode: str = field(default="default", metadata={"choices": COMPILE_MODES})  # torch.compile mode (reduce-overhead: CUDA graphs, fewer launches)
    checkpointing: bool = False  # activation checkpointing in the language model (bigger batches, more compute)
    zero_stage: int = -1  # ZeRO stage (-1: none on one process, the DeepSpeed JSON's on several)

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.compile_scope not in COMPILE_SCOPES:
            raise ValueError(f"compile_scope must be one of {COMPILE_SCOPES}, got {self.compile_scope!r}")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be one of {COMPILE_MODES}, got {self.compile_mode!r}")
        if self.zero_stage not in (-1, 0, 1, 2, 3):
            raise ValueError(f"zero_stage must be -1 (automatic) or 0-3, got {self.zero_stage}")


@dataclass(frozen=True)
class Plan:
    """What the engine is built with, once the machine is known."""
    zero_stage: int
    precision: str  # fp32 or bf16
    compile: bool
    compile_scope: str
    compile_mode: str
    checkpointing: bool
    fused_optimizer: bool


def plan(cfg: EngineConfig, world_size: int, cuda: bool, json_stage: int, bf16_ok: bool = True) -> Plan:
    """The choices of `cfg` on a machine of `world_size` processes, with or without a GPU (`bf16_ok`: one
    that computes in bf16)."""
    stage = cfg.zero_stage if cfg.zero_stage >= 0 else (0 if world_size == 1 else json_stage)
    bf16 = cuda and bf16_ok if cfg.precision == "auto" else cfg.precision == "bf16"
    return Plan(zero_stage=stage, precision="bf16" if bf16 else "fp32",
                compile=cuda if cfg.compile is None else cfg.compile, compile_scope=cfg.compile_scope,
                compile_mode=cfg.compile_mode,
                checkpointing=cfg.checkpointing,
                fused_optimizer=cuda)


def engine_config(path: str, batch_size: int, lr: float, total_steps: int | None, p: Plan) -> dict:
    """The DeepSpeed JSON of `path` (ds_config: batch, learning rate, schedule) with the plan's ZeRO stage,
    precision and optimizer."""
    ds = ds_config(path, batch_size, lr, total_steps)
    zero = dict(ds.get("zero_optimization") or {})
    ds["zero_optimization"] = {**zero, "stage": p.zero_stage} if p.zero_stage else {"stage": 0}
    for key in ("bf16", "fp16", "torch_autocast"):
        ds.pop(key, None)
    if p.precision == "bf16":
        if p.zero_stage:
            ds["bf16"] = {"enabled": True}
        else:
            ds["torch_autocast"] = {"enabled": True, "dtype": "bfloat16"}
    params = ds.setdefault("optimizer", {"type": "AdamW", "params": {}}).setdefault("params", {})
    params["torch_adam"] = True  # torch's AdamW: no JIT-built DeepSpeed kernel on any machine
    if p.fused_optimizer:
        params["fused"] = True
    ds["timers"] = {"throughput": {"enabled": False}}  # it synchronises the device twice a step
    return ds


def one_process_step(engine) -> None:
    """What a step of one process (no ZeRO, nothing to reduce) does not need from DeepSpeed's stage 0: the
    all-reduce of every gradient over a group of one (flat buffers filled and copied back), and clipping one
    parameter at a time with two waits for the device; torch's clip_grad_norm_ clips the same gradients to
    the same norm with multi-tensor kernels. With torch's fused AdamW (a GPU), the clipping is not a pass of its
    own over the gradients: the fused step divides them by clip_grad_norm_'s factor as it reads them (its
    grad_scale, which torch's GradScaler uses to unscale), so only the norm reads them before the step."""
    engine.enable_backward_allreduce = False
    max_norm = engine.gradient_clipping()
    params = [p for p in engine.module.parameters() if p.requires_grad]
    opt = engine.optimizer

    def clip():  # DeepSpeed calls this before the optimizer step when gradient_clipping > 0
        # asked each step: a checkpoint's parameter groups replace the optimizer's, "fused" included (one saved
        # by a run without a GPU resumes unfused), and an unfused step refuses a grad_scale
        if not (isinstance(opt, torch.optim.Optimizer) and getattr(opt, "_step_supports_amp_scaling", False)
                and all(g.get("fused") for g in opt.param_groups)):
            opt.__dict__.pop("grad_scale", None)
            torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], max_norm)
            return
        # the gradients times min(1, max_norm / (norm + 1e-6)), as clip_grad_norm_ scales them
        norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        opt.grad_scale = torch.clamp((norm.float() + 1e-6) / max_norm, min=1.0)

    engine.clip_fp32_gradients = clip


def enable_checkpointing(module: torch.nn.Module) -> bool:
    """Activation checkpointing in the first transformers model inside `module`; False if there is none."""
    for m in module.modules():
        if getattr(m, "supports_gradient_checkpointing", False) and hasattr(m, "gradient_checkpointing_enable"):
            m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            return True
    return False


def build_engine(model: torch.nn.Module, parameters, deepspeed_config: str, batch_size: int, lr: float,
                 total_steps: int | None, cfg: EngineConfig):
    """(engine, plan): `model` in a DeepSpeed engine as `cfg` plans it on this machine (init_distributed first)."""
    import deepspeed
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    json_stage = int((ds_config(deepspeed_config, batch_size, lr).get("zero_optimization") or {}).get("stage", 0))
    cuda = torch.cuda.is_available()
    p = plan(cfg, world, cuda, json_stage, bf16_ok=cuda and torch.cuda.is_bf16_supported())
    if p.checkpointing and not enable_checkpointing(model):
        raise ValueError("--checkpointing: the model holds no transformers model to checkpoint")
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=parameters,
                                           config=engine_config(deepspeed_config, batch_size, lr, total_steps, p))
    if world == 1 and p.zero_stage == 0:
        one_process_step(engine)
    if p.compile and p.compile_scope == "model":
        install_output_hooks(model)
        engine.compile(compile_kwargs={"dynamic": True, **compile_mode(p.compile_mode)})
    elif p.compile and not compile_regions(model, p.compile_mode):
        raise ValueError("--compile: the model holds no transformer layer to compile")
    return engine, p


def compile_mode(mode: str) -> dict:
    """torch.compile's keyword for `mode` (none for its default)."""
    return {} if mode == "default" else {"mode": mode}


def is_layer(m: torch.nn.Module) -> bool:
    """A transformer layer: transformers' name of a model's repeated block."""
    return type(m).__name__.endswith(LAYER_SUFFIXES)


def regions(module: torch.nn.Module) -> list[torch.nn.Module]:
    """What scope `layers` compiles inside `module`, each alone: every transformer layer, and every module that
    declares itself a region (`compile_region`: the G-MLLM's head and loss, the small profile's frozen vision
    trunk). The layers of a model share one graph; each other region is one graph of its own."""
    return [m for m in module.modules() if is_layer(m) or getattr(m, "compile_region", False)]


def compile_regions(module: torch.nn.Module, mode: str = "default") -> int:
    """torch.compile every region of `module` (dynamic shapes: batches differ in length and in images, and one
    graph serves them all) in `mode`; how many transformer layers were among them."""
    found = regions(module)
    for m in found:
        m.compile(dynamic=True, **compile_mode(mode))
    return sum(is_layer(m) for m in found)


def install_output_hooks(module: torch.nn.Module) -> int:
    """Install transformers' output-capturing hooks in every transformers model inside `module` now, as their
    first forward pass would: installing them takes a lock that torch.compile cannot trace, so a whole-model
    graph compiled before would break there on its first call and be compiled a second time after it. How
    many transformers models it found (0 where transformers has no such hooks)."""
    try:
        from transformers.utils.output_capturing import maybe_install_capturing_hooks
    except ImportError:  # a transformers without them: nothing to install
        return 0
    from transformers import PreTrainedModel
    models = [m for m in module.modules() if isinstance(m, PreTrainedModel)]
    for m in models:
        maybe_install_capturing_hooks(m)
    return len(models)
