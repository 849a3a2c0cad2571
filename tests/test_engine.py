"""training.engine: the engine the G-MLLM jobs build per machine (no ZeRO on one process, bf16 autocast over
fp32 weights, fused AdamW, compile), and the compiled step against the eager one on a tiny model."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from osmf_core.features.templates import TEMPLATES, render
from osmf_core.models.gmllm.builders import build_tiny
from osmf_core.models.gmllm.model import GMLLMConfig, encode
from osmf_core.models.gmllm.tokens import train_tokenizer
from osmf_core.training.engine import EngineConfig, build_engine, engine_config, plan
from osmf_core.training.loop import init_distributed, train_step

JSON = "cluster/deepspeed/gmllm.json"  # the jobs' DeepSpeed JSON: ZeRO-2 for several processes
TINY = GMLLMConfig(image_size=32, patch_size=16, vision_hidden=16, text_hidden=32, text_heads=2, text_intermediate=64,
                   vocab_size=400, group_dim=8, group_points=10, group_hidden=32)


def test_one_process_gets_no_zero_several_get_the_json_stage():
    auto = EngineConfig()
    one_gpu = plan(auto, world_size=1, cuda=True, json_stage=2)
    assert (one_gpu.zero_stage, one_gpu.precision, one_gpu.compile, one_gpu.fused_optimizer) == (0, "bf16", True, True)
    assert one_gpu.compile_scope == "layers"  # each transformer layer; the whole model is opt-in
    cpu = plan(auto, world_size=1, cuda=False, json_stage=2)
    assert (cpu.zero_stage, cpu.precision, cpu.compile, cpu.fused_optimizer) == (0, "fp32", False, False)
    eight = plan(auto, world_size=8, cuda=True, json_stage=2)
    assert (eight.zero_stage, eight.precision) == (2, "bf16")
    assert plan(auto, 1, True, 2, bf16_ok=False).precision == "fp32"  # a GPU without bf16
    forced = plan(EngineConfig(zero_stage=3, precision="fp32", compile=False), 1, True, 2)
    assert (forced.zero_stage, forced.precision, forced.compile) == (3, "fp32", False)
    with pytest.raises(ValueError, match="zero_stage"):
        EngineConfig(zero_stage=5)
    with pytest.raises(ValueError, match="compile_scope"):
        EngineConfig(compile_scope="graph")
    with pytest.raises(ValueError, match="compile_mode"):
        EngineConfig(compile_mode="fast")
    assert plan(EngineConfig(compile_mode="reduce-overhead"), 1, True, 2).compile_mode == "reduce-overhead"


def test_the_single_gpu_deepspeed_config_has_no_zero_and_autocasts_over_fp32_weights():
    ds = engine_config(JSON, 16, 1e-3, 100, plan(EngineConfig(), 1, True, 2))
    assert ds["zero_optimization"] == {"stage": 0}  # no partitioning, buckets or gradient hooks
    assert ds["torch_autocast"] == {"enabled": True, "dtype": "bfloat16"} and "bf16" not in ds and "fp16" not in ds
    assert ds["optimizer"]["params"]["fused"] is True and ds["optimizer"]["params"]["torch_adam"] is True
    assert ds["train_micro_batch_size_per_gpu"] == 16 and ds["scheduler"]["params"]["total_num_steps"] == 100
    several = engine_config(JSON, 16, 1e-3, 100, plan(EngineConfig(), 8, True, 2))
    on_disk = json.loads(open(JSON).read())["zero_optimization"]
    assert several["zero_optimization"] == on_disk and several["bf16"] == {"enabled": True}
    assert "torch_autocast" not in several


def _tiny(seed=0, cfg=TINY):
    texts = [render(t, k, "Nova Pro Phone 7") for t in TEMPLATES for k in range(len(TEMPLATES[t]))]
    tok = train_tokenizer(texts * 3 + ["USER: ASSISTANT: the product, cozy kitchen background"], cfg.vocab_size)
    torch.manual_seed(seed)
    return build_tiny(cfg, tok)


def _batch(model, max_len=200):
    from osmf_core.world.images import to_png
    png = to_png((np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8))
    instr = [render("prompt_generation", 0, "Nova"), render("group_analysis", 1)]
    g = np.random.default_rng(1).normal(size=(2, 11 * TINY.group_dim)).astype(np.float32)
    return encode(model, instr, ["the product, cozy kitchen background", "member_level: 3"], max_len, images=[png, b""],
                  group_features=list(g))


def test_a_real_engine_with_the_single_gpu_plan_has_no_zero_optimizer():
    """The single-GPU plan (stage 0, bf16 autocast, fused AdamW) in a real DeepSpeed engine, on the CPU: the
    optimizer is torch's fused AdamW itself over the fp32 weights, not a ZeRO or bf16 wrapper."""
    init_distributed()
    model = _tiny()
    p = dataclasses.replace(plan(EngineConfig(), 1, True, 2), compile=False)
    import deepspeed
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=list(model.parameters()),
                                           config=engine_config(JSON, 2, 1e-3, 10, p))
    assert engine.zero_optimization_stage() == 0 and not engine.bfloat16_enabled()
    assert type(engine.optimizer) is torch.optim.AdamW and engine.optimizer.defaults["fused"] is True
    assert all(q.dtype == torch.float32 for q in model.parameters())  # the fp32 master weights are the model's
    batch = _batch(model)
    loss = train_step(engine, lambda b: engine(**b).loss, batch)
    assert torch.isfinite(loss)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        unlabelled = {k: v for k, v in batch.items() if k != "labels"}
        assert engine.module(**unlabelled).logits.dtype == torch.bfloat16  # autocast: the matmuls ran in bf16


@pytest.mark.parametrize("phase", ["pretrain", "grm", "grm-patches"])
def test_a_single_gpu_step_never_reads_the_device_back(phase, device_reads):
    """The single-GPU plan's step (stage 0 with the one-process step, fused AdamW, bf16 autocast), on the CPU:
    no operator in forward, backward, clipping or the optimizer reads a tensor back, so on a GPU the CPU queues
    the next work while the device runs (transformers' own mask checks did, once a step each, and the gradient of
    the image patches' placement, masked_scatter's). grm-patches: the GRM that pools every patch and reads 5 of
    the 10 percentile points."""
    from osmf_core.models.gmllm.grm import GRM
    from osmf_core.training.engine import one_process_step

    init_distributed()
    base = _tiny()
    model = base if phase == "pretrain" else GRM(base, use_group=True, pooling="bilinear") if phase == "grm" \
        else GRM(base, use_group=True, n_points=5, pooling="patches")
    p = dataclasses.replace(plan(EngineConfig(), 1, True, 2), compile=False)
    import deepspeed
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=list(model.parameters()),
                                           config=engine_config(JSON, 2, 1e-3, 10, p))
    one_process_step(engine)
    if phase == "pretrain":
        batch, loss_of = _batch(base), lambda b: engine(**b).loss  # noqa: E731
    else:  # one pair: two one-image rows of different lengths (so one is padded), the first one wins
        from osmf_core.models.gmllm.grm import reward_inputs
        from osmf_core.world.images import to_png
        pngs = [to_png((np.random.default_rng(s).random((32, 32, 3)) * 255).astype(np.uint8)) for s in (0, 1)]
        g = list(np.random.default_rng(1).normal(size=(2, 11 * TINY.group_dim)).astype(np.float32))
        batch = reward_inputs(model, ["Nova", "Nova Pro Phone 7 in graphite"], pngs, g, 64, None)
        loss_of = lambda b: torch.nn.functional.cross_entropy(engine(**b).float(), torch.zeros(1, dtype=torch.long))  # noqa: E731
    assert not batch["attention_mask"].bool().all()  # padded rows: the case transformers checks
    train_step(engine, loss_of, batch)  # the first step creates the optimizer's state
    with device_reads() as reads:
        train_step(engine, loss_of, batch)
    assert reads.seen == []


def test_one_process_skips_the_reduce_and_clips_as_deepspeed_does():
    """One process: build_engine turns off DeepSpeed's all-reduce of every gradient (a group of one) and its
    throughput timer (a device wait at both ends of a step), and clips with torch's multi-tensor norm. Against
    DeepSpeed's own stage-0 path (reduce, per-parameter clipping) from the same weights: the same weights after
    three steps, with the gradient norm far above the clipping threshold so that clipping decides every step."""
    import deepspeed
    init_distributed()
    cfg = EngineConfig(compile=False, precision="fp32")
    weights, unused = {}, None
    for ours in (True, False):
        model = _tiny(seed=0)
        if ours:
            engine, _ = build_engine(model, list(model.parameters()), JSON, 2, 1e-2, 10, cfg)
            assert engine.enable_backward_allreduce is False and engine.tput_timer.config.enabled is False
        else:  # DeepSpeed's stage 0 as it comes, with the same JSON
            ds = engine_config(JSON, 2, 1e-2, 10, plan(cfg, 1, False, 2))
            ds.pop("timers")
            engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=list(model.parameters()), config=ds)
            assert engine.enable_backward_allreduce is True and engine.tput_timer.config.enabled is True
        assert engine.gradient_clipping() == 1.0
        batch = _batch(model)
        for _ in range(3):
            engine.backward(engine(**batch).loss * 1e3)  # gradients of norm >> 1: clipped every step
            grads = {k: q.grad for k, q in model.named_parameters() if q.grad is not None}
            assert torch.nn.utils.get_total_norm(list(grads.values())) > 10
            if ours:
                unused = {k for k, _ in model.named_parameters()} - set(grads)
            engine.step()
        weights[ours] = {k: v.detach().clone() for k, v in model.named_parameters()}
    start = dict(_tiny(seed=0).named_parameters())
    # a weight no loss reaches (the tiny CLIP tower's last norm: LLaVA reads the layer before it)
    assert unused == {"llava.model.vision_tower.post_layernorm.weight", "llava.model.vision_tower.post_layernorm.bias"}
    for k, v in weights[True].items():
        if k in unused:  # ours leaves it as it was; DeepSpeed's reduce gives it a zero gradient, so AdamW decays it
            assert torch.equal(v, start[k])
        else:  # every trained weight: the same after three clipped steps, and moved
            torch.testing.assert_close(v, weights[False][k], rtol=1e-5, atol=1e-6)
            assert not torch.equal(v, start[k]) or not v.requires_grad


def test_the_fused_step_clips_as_clip_grad_norm_does_without_a_pass_of_its_own():
    """With torch's fused AdamW (the single-GPU plan; fused AdamW runs on the CPU too), the one-process step hands
    clip_grad_norm_'s factor to the fused step (its grad_scale) instead of scaling the gradients first. Against
    clip_grad_norm_ then the same fused step, from the same weights: the same weights after three steps whose
    gradient norm is far above the threshold, and the gradients the step leaves are the clipped ones (norm 1)."""
    import deepspeed
    from osmf_core.training.engine import one_process_step
    init_distributed()
    p = dataclasses.replace(plan(EngineConfig(compile=False, precision="fp32"), 1, False, 2), fused_optimizer=True)
    weights = {}
    for in_step in (True, False):
        model = _tiny(seed=0)
        engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=list(model.parameters()),
                                               config=engine_config(JSON, 2, 1e-2, 10, p))
        assert engine.optimizer.defaults["fused"] is True
        one_process_step(engine)
        params = [q for q in model.parameters() if q.requires_grad]
        if not in_step:  # the reference: clip_grad_norm_ scales the gradients, then the fused step
            engine.clip_fp32_gradients = lambda: torch.nn.utils.clip_grad_norm_(params, engine.gradient_clipping())  # noqa: E731
        batch, kept = _batch(model), _keep_grads(engine.optimizer, params)
        for _ in range(3):
            engine.backward(engine(**batch).loss * 1e3)
            norm = float(torch.nn.utils.get_total_norm([q.grad for q in params if q.grad is not None]))
            assert norm > 10
            engine.step()
            left = float(torch.nn.utils.get_total_norm(kept))
            assert left == pytest.approx(1.0, rel=1e-4)  # clipped to gradient_clipping, either way
            if in_step:
                assert float(engine.optimizer.grad_scale) == pytest.approx((norm + 1e-6) / 1.0, rel=1e-5)
        weights[in_step] = {k: v.detach().clone() for k, v in model.named_parameters()}
    for k, v in weights[True].items():
        torch.testing.assert_close(v, weights[False][k], rtol=1e-5, atol=1e-6)


def test_a_checkpoint_of_an_unfused_optimizer_resumes_on_the_fused_plan(tmp_path):
    """A checkpoint's parameter groups replace the optimizer's, "fused" included: one saved by a run without a GPU
    (unfused) resumes unfused under the fused plan, and its steps clip with clip_grad_norm_ (an unfused step
    refuses a grad_scale), to the same weights as the run that saved it continued."""
    import deepspeed
    from osmf_core.training.engine import one_process_step
    init_distributed()
    cpu = plan(EngineConfig(compile=False, precision="fp32"), 1, False, 2)
    weights = {}
    for fused in (False, True):
        model = _tiny(seed=0)
        p = dataclasses.replace(cpu, fused_optimizer=fused)
        engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=list(model.parameters()),
                                               config=engine_config(JSON, 2, 1e-2, 10, p))
        one_process_step(engine)
        batch = _batch(model)
        if not fused:  # the run without a GPU: two steps, a checkpoint, then two more
            for _ in range(2):
                engine.backward(engine(**batch).loss * 1e3)
                engine.step()
            engine.save_checkpoint(str(tmp_path), tag="step2")
        else:
            assert engine.optimizer.defaults["fused"] is True
            engine.load_checkpoint(str(tmp_path), tag="step2")
            assert not any(g.get("fused") for g in engine.optimizer.param_groups)
        for _ in range(2):
            engine.backward(engine(**batch).loss * 1e3)
            engine.step()
        assert not hasattr(engine.optimizer, "grad_scale")
        weights[fused] = {k: v.detach().clone() for k, v in model.named_parameters()}
    for k, v in weights[True].items():
        torch.testing.assert_close(v, weights[False][k], rtol=1e-5, atol=1e-6)


def _keep_grads(opt, params) -> list:
    """A list that each opt.step from now on fills with copies of the gradients of `params` as the step left
    them (DeepSpeed zeroes them after it)."""
    step, kept = opt.step, []

    def wrapped(*args, **kwargs):
        out = step(*args, **kwargs)
        kept[:] = [q.grad.detach().clone() for q in params if q.grad is not None]
        return out
    opt.step = wrapped
    return kept


@pytest.mark.parametrize("scope,mode", [("model", "default"), ("layers", "default"), ("layers", "reduce-overhead")])
def test_a_compiled_step_gives_the_loss_of_an_eager_one(scope, mode):
    """Two engines from the same weights, one compiled (the whole model, or each layer alone; reduce-overhead:
    CUDA graphs on a GPU), one eager: the same losses over five steps on the same batch (the weights move
    between them, so the optimizer steps agree too; the schedule's warmup makes the first two steps' learning
    rate 0)."""
    init_distributed()
    losses = {}
    for compiled in (False, True):
        model = _tiny(seed=0)
        engine, p = build_engine(model, list(model.parameters()), JSON, 2, 1e-2, 10,
                                 EngineConfig(compile=compiled, compile_scope=scope, compile_mode=mode,
                                              precision="fp32"))
        layers = [m for m in model.modules() if type(m).__name__.endswith(("DecoderLayer", "EncoderLayer"))]
        assert p.compile is compiled and len(layers) == TINY.text_layers + TINY.vision_layers
        whole = compiled and scope == "model"
        assert engine.is_compiled is whole and (model._compiled_call_impl is not None) is whole
        assert all((m._compiled_call_impl is not None) is (compiled and scope == "layers") for m in layers)
        assert (model.next_token._compiled_call_impl is not None) is (compiled and scope == "layers")
        batch = _batch(model)
        losses[compiled] = [float(train_step(engine, lambda b: engine(**b).loss, batch)) for _ in range(5)]
    assert losses[False][4] < losses[False][0] - 0.01  # the steps train
    assert losses[True] == pytest.approx(losses[False], rel=1e-4, abs=1e-5)


def test_the_head_and_the_small_profiles_vision_trunk_are_regions_that_compile_without_a_break():
    """Scope `layers` compiles, besides the transformer layers, the modules that declare themselves regions: the
    head with its loss (NextTokenLogprobs) and the small profile's frozen MobileNetV2 trunk. Each traces as one
    graph for inputs of other lengths or image counts (dynamic shapes), with no graph break."""
    from torch._dynamo.testing import CompileCounter
    from osmf_core.models.gmllm.head import NextTokenLogprobs
    from osmf_core.models.gmllm.model import MobileNetTower
    from osmf_core.training.engine import regions
    tower = MobileNetTower(pretrained=False)
    assert regions(tower) == [tower.net]
    model = _tiny()
    found = regions(model)
    assert model.next_token in found
    assert sum(type(m).__name__.endswith("DecoderLayer") for m in found) == TINY.text_layers
    head = torch.nn.Linear(16, 50, bias=False)
    losses = [(torch.randn(2, n, 16, requires_grad=True), head, torch.randint(0, 50, (2, n)).masked_fill_(
        torch.rand(2, n) < 0.3, -100)) for n in (7, 11, 7)]
    for module, calls in ((tower.net, [(torch.randn(n, 3, 64, 64),) for n in (2, 3, 2)]),
                          (NextTokenLogprobs(), losses)):
        torch._dynamo.reset()
        counter = CompileCounter()
        compiled = torch.compile(module, backend=counter, dynamic=True)
        for args in calls:  # as in a training step: grad mode on (the trunk's weights and images need none)
            assert torch.allclose(compiled(*args), module(*args))
        assert counter.frame_count == 1
    torch._dynamo.reset()


def test_the_compiled_head_keeps_only_its_bf16_logits_for_the_backward_pass():
    """Under bf16 autocast, the head's region eager keeps a full-precision (rows x positions x vocabulary) tensor
    for the backward pass (the log-softmax, which log-softmax and gather both save: 4 bytes an entry); compiled,
    only the head's bf16 logits (2 bytes an entry), half the memory at every batch size."""
    from osmf_core.models.gmllm.head import NextTokenLogprobs
    torch.manual_seed(0)
    rows, length, width, vocab = 2, 33, 16, 1000
    entries = rows * (length - 1) * vocab

    def kept(region) -> list[int]:  # bytes of each (rows, positions, vocabulary) storage saved for backward
        sizes = {}

        def pack(t):
            if t.numel() == entries:
                sizes[t.untyped_storage().data_ptr()] = t.numel() * t.element_size()
            return t
        h, head = torch.randn(rows, length, width, requires_grad=True), torch.nn.Linear(width, vocab, bias=False)
        labels = torch.randint(0, vocab, (rows, length))
        with torch.autocast("cpu", dtype=torch.bfloat16), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = region(h, head, labels)
        out.sum().backward()
        return sorted(sizes.values())

    torch._dynamo.reset()
    compiled = torch.compile(NextTokenLogprobs(), dynamic=True)
    kept(compiled)  # the first call compiles
    assert kept(NextTokenLogprobs()) == [entries * 4]
    assert kept(compiled) == [entries * 2]
    torch._dynamo.reset()


def test_compiled_layers_share_their_graphs_however_deep_the_model():
    """Regional compilation compiles a layer's graph once for all layers. Language models of 4 and of 12
    layers (past torch's limit of 8 recompiles of one function, after which it runs the rest eager), each
    trained on batches of two widths, one with padding: the same few graphs for both depths (text layers with
    and without a padding mask, vision layers, the head's region; with the cache, 10 for both: 4 x 2 + 2, and 8 + 2 at the
    limit). Before the training pass stopped building a key-value cache, each layer wrote
    its own slot of it, torch.compile specialised every layer, and from the ninth on they ran eager (seen on
    a GPU as a step without compiled kernels)."""
    from torch._dynamo.utils import counters
    init_distributed()
    graphs = {}
    for depth in (4, 12):
        torch._dynamo.reset()
        counters.clear()
        model = _tiny(seed=0, cfg=dataclasses.replace(TINY, text_layers=depth))
        engine, p = build_engine(model, list(model.parameters()), JSON, 2, 1e-2, 10,
                                 EngineConfig(compile=True, precision="fp32"))
        assert p.compile_scope == "layers"
        for batch in (_batch(model), _batch(model, max_len=40)):  # the first row is padded in the first batch only
            train_step(engine, lambda b: engine(**b).loss, batch)
        graphs[depth] = counters["stats"]["unique_graphs"]
    assert graphs[12] == graphs[4] and graphs[4] <= 6


def test_the_whole_model_compiles_into_one_graph_once():
    """--compile-scope model: with transformers' output hooks installed before compiling, the G-MLLM's
    forward is one graph, compiled once for batches of different widths (dynamic shapes), with no graph break
    (a break leaves eager code between graphs); without them the first call breaks at the hook lock and the
    model is compiled again after it."""
    from torch._dynamo.testing import CompileCounter
    from osmf_core.training.engine import install_output_hooks
    frames = {}
    for pre in (False, True):
        torch._dynamo.reset()
        model = _tiny()
        assert install_output_hooks(model) > 0 if pre else True
        counter = CompileCounter()
        compiled = torch.compile(model, backend=counter, dynamic=True)
        wide, narrow = _batch(model), _batch(model, max_len=120)
        assert narrow["input_ids"].shape[1] < wide["input_ids"].shape[1]
        for b in (wide, narrow, wide):
            compiled(**b)
        frames[pre] = counter.frame_count
    torch._dynamo.reset()
    assert frames[True] == 1 and frames[False] > 1


def test_length_buckets_keep_every_row_once_and_pad_less():
    """64 rows of lengths 0..63 in a random order, 4 batches of 16: pooled over the 4, each batch holds 16
    consecutive lengths (it pads to at most 15 more than its shortest row, not to 63); every row comes once;
    the same seed gives the same batches (a resumed epoch skips the same ones)."""
    from osmf_core.training.loop import bucket_window, length_bucketed
    rng = np.random.default_rng(0)
    length = rng.permutation(64)
    drawn = [{"length": length[i:i + 16], "row": np.arange(i, i + 16)} for i in range(0, 64, 16)]
    assert max(b["length"].max() - b["length"].min() for b in drawn) > 40  # as drawn: every batch pads far
    got = list(length_bucketed(iter(drawn), lambda b: b["length"], window=4, seed=1))
    assert [len(b["row"]) for b in got] == [16] * 4
    assert sorted(np.concatenate([b["row"] for b in got])) == list(range(64))
    assert sorted((b["length"].min(), b["length"].max()) for b in got) == [(0, 15), (16, 31), (32, 47), (48, 63)]
    again = list(length_bucketed(iter(drawn), lambda b: b["length"], window=4, seed=1))
    assert all((a["row"] == b["row"]).all() for a, b in zip(got, again))
    # a window of 2 pools two batches at a time: rows never leave their window
    two = list(length_bucketed(iter(drawn), lambda b: b["length"], window=2, seed=1))
    assert sorted(np.concatenate([b["row"] for b in two[:2]])) == list(range(32))
    assert bucket_window(5) == 5 and bucket_window(0) == 0
    assert bucket_window(None) == (16 if torch.cuda.is_available() else 0)  # off on a CPU: CI and the demo as before


def test_approx_tokens_counts_characters_and_image_tokens():
    from osmf_core.models.gmllm.model import approx_tokens
    got = approx_tokens(["<image> describe it", "plain"], ["a" * 40, "b" * 3], image_tokens=16)
    assert list(got) == [(19 + 40) // 4 + 16, (5 + 3) // 4]


def test_activation_checkpointing_gives_the_same_loss_and_gradients():
    """--checkpointing recomputes the layers in the backward pass: the same loss and gradients as without."""
    init_distributed()
    out = {}
    for ckpt in (False, True):
        model = _tiny(seed=0)
        engine, p = build_engine(model, list(model.parameters()), JSON, 2, 1e-2, 10,
                                 EngineConfig(checkpointing=ckpt, compile=False, precision="fp32"))
        assert p.checkpointing is ckpt and model.llava.is_gradient_checkpointing is ckpt
        model.train()
        loss = engine(**_batch(model)).loss
        engine.backward(loss)
        out[ckpt] = (float(loss.detach()), model.llava.lm_head.weight.grad.clone())
    assert out[True][0] == pytest.approx(out[False][0], rel=1e-6)
    assert torch.allclose(out[True][1], out[False][1], atol=1e-6)
