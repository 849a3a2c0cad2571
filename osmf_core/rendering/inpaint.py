"""The production renderer: diffusers' ControlNet-Inpaint Stable Diffusion repaints the background around a
product from the prompt, conditioned on the product's edges, and the product's own pixels are put back.

    control_image   the product's edges (Sobel magnitude + threshold, Canny-like): ControlNet's condition
    inpaint_mask    255 where the background is repainted, 0 on the product dilated by a few pixels
    tiny_pipeline   the real pipeline class on tiny random components (tests, CPU demo), built offline
    from_local      the same pipeline from local SD 1.5 inpainting + ControlNet weights (no hub)
    InpaintRenderer RenderJobs -> images, the contract of render.ProceduralRenderer
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

from osmf_core.rendering.procedural import RenderJob, keep_product
from osmf_core.world.styles import STYLE_DIMS

SQUARE = ndimage.generate_binary_structure(2, 2)  # 3x3 ones: dilation by d px covers Chebyshev distance <= d


# ---------------------------------------------------------------- pure image functions
def control_image(rgb: np.ndarray, mask: np.ndarray, threshold: float = 0.1) -> np.ndarray:
    """White-on-black edge map (H, W, 3) uint8 of the product: Sobel magnitude of its grey image and of its
    alpha, each relative to a full black-to-white step (Sobel's response 4), above `threshold`."""
    grey = rgb.astype(np.float64).mean(axis=-1) / 255.0
    alpha = np.asarray(mask, dtype=np.float64)

    def magnitude(a):
        return np.hypot(ndimage.sobel(a, axis=0), ndimage.sobel(a, axis=1)) / 4.0

    edges = (magnitude(grey) > threshold) | (magnitude(alpha) > threshold)
    return np.repeat((edges * 255).astype(np.uint8)[..., None], 3, axis=-1)


def inpaint_mask(mask: np.ndarray, dilate_px: int) -> np.ndarray:
    """(H, W) uint8: 255 where the background is repainted, 0 on the product (alpha > 0) dilated by
    `dilate_px` pixels with the square 3x3 structure (so the kept region grows by a square, not a cross)."""
    if dilate_px < 0:
        raise ValueError(f"dilate_px must be >= 0, got {dilate_px}")
    keep = np.asarray(mask) > 0
    if dilate_px:  # scipy reads iterations=0 as "until nothing changes", so 0 skips the call
        keep = ndimage.binary_dilation(keep, structure=SQUARE, iterations=dilate_px)
    return np.where(keep, 0, 255).astype(np.uint8)


def seed_int(seed) -> int:
    """An int seed as is; a tuple of ints hashed deterministically (numpy's SeedSequence) to a 63-bit int."""
    if isinstance(seed, (int, np.integer)):
        return int(seed)
    return int(np.random.SeedSequence([int(s) for s in seed]).generate_state(1, np.uint64)[0] >> np.uint64(1))


# ---------------------------------------------------------------- pipelines
def tiny_tokenizer(max_length: int = 77):
    """A CLIP-like byte-level BPE tokenizer trained offline on the style vocabulary (any text encodes):
    <|startoftext|> ... <|endoftext|>, padded with <|endoftext|> as CLIP's is."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    bos, eos = "<|startoftext|>", "<|endoftext|>"
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=[bos, eos], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    words = [w for terms in STYLE_DIMS.values() for w in terms]
    tok.train_from_iterator(words + ["the product, background, palette, lighting"], trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", special_tokens=[(bos, tok.token_to_id(bos)), (eos, tok.token_to_id(eos))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=eos,
                                   unk_token=eos, model_max_length=max_length)


def tiny_pipeline(seed: int = 0, size: int = 64):
    """StableDiffusionControlNetInpaintPipeline on tiny random components, like diffusers' own fast tests:
    UNet (32, 64) with 9 input channels (latents + mask + masked-image latents), a matching ControlNet, a
    2-block VAE (scale factor 2, matched by the ControlNet's 2-stage condition embedding), a 2-layer CLIP
    text encoder of width 32, DDIM. `size` is the UNet's nominal sample size in pixels."""
    import torch
    from diffusers import (
        AutoencoderKL,
        ControlNetModel,
        DDIMScheduler,
        StableDiffusionControlNetInpaintPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel
    blocks, groups, width = (32, 64), 8, 32
    down, up = ("DownBlock2D", "CrossAttnDownBlock2D"), ("CrossAttnUpBlock2D", "UpBlock2D")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(block_out_channels=blocks, layers_per_block=1, sample_size=size // 2, in_channels=9,
                                out_channels=4, down_block_types=down, up_block_types=up, cross_attention_dim=width,
                                norm_num_groups=groups, attention_head_dim=4)
    controlnet = ControlNetModel(block_out_channels=blocks, layers_per_block=1, in_channels=4, down_block_types=down,
                                 cross_attention_dim=width, norm_num_groups=groups, attention_head_dim=4,
                                 conditioning_embedding_out_channels=(16, 32))
    vae = AutoencoderKL(block_out_channels=blocks, in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        layers_per_block=1, norm_num_groups=groups, sample_size=size)
    tokenizer = tiny_tokenizer()
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=width, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False)
    return StableDiffusionControlNetInpaintPipeline(
        vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=tokenizer, unet=unet.eval(),
        controlnet=controlnet.eval(), scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)


def from_local(sd_path: str, controlnet_path: str, device=None, dtype=None):
    """The pipeline from local directories (diffusers layout, no hub): Stable Diffusion 1.5 inpainting
    (e.g. a copy of stable-diffusion-inpainting) and a ControlNet (e.g. sd-controlnet-canny), with the UniPC
    scheduler the ControlNet recipe uses. `dtype` e.g. torch.float16 on a GPU."""
    from diffusers import ControlNetModel, StableDiffusionControlNetInpaintPipeline, UniPCMultistepScheduler
    controlnet = ControlNetModel.from_pretrained(controlnet_path, dtype=dtype, local_files_only=True)
    pipe = StableDiffusionControlNetInpaintPipeline.from_pretrained(
        sd_path, controlnet=controlnet, dtype=dtype, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False, local_files_only=True)
    pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config)
    return pipe.to(device) if device is not None else pipe


# ---------------------------------------------------------------- the renderer
@dataclass
class InpaintConfig:
    # sampling
    steps: int = 2  # denoising steps; 2 is the tiny profile, production uses ~30 (UniPC)
    guidance_scale: float = 7.5  # classifier-free guidance; <= 1 turns it off
    controlnet_conditioning_scale: float = 0.5  # weight of the product-edge condition (the pipeline's default)
    negative_prompt: str = ""  # e.g. "blurry, text, watermark"; "" for none
    # masking and batching
    dilate_px: int = 2  # product pixels grown by this much are kept out of the repainted region
    batch_size: int = 4  # jobs per pipeline call

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"InpaintConfig.steps must be >= 1, got {self.steps}")
        if self.guidance_scale < 0:
            raise ValueError(f"InpaintConfig.guidance_scale must be >= 0, got {self.guidance_scale}")
        if self.controlnet_conditioning_scale < 0:
            raise ValueError("InpaintConfig.controlnet_conditioning_scale must be >= 0, "
                             f"got {self.controlnet_conditioning_scale}")
        if self.dilate_px < 0:
            raise ValueError(f"InpaintConfig.dilate_px must be >= 0, got {self.dilate_px}")
        if self.batch_size < 1:
            raise ValueError(f"InpaintConfig.batch_size must be >= 1, got {self.batch_size}")


def batches(jobs: list[RenderJob], batch_size: int) -> list[list[int]]:
    """Indices of consecutive jobs, at most batch_size per batch, a new batch wherever the size changes."""
    out: list[list[int]] = []
    for i, job in enumerate(jobs):
        if out and len(out[-1]) < batch_size and jobs[out[-1][0]].mask.shape == job.mask.shape:
            out[-1].append(i)
        else:
            out.append([i])
    return out


class InpaintRenderer:
    """Renders RenderJobs with a ControlNet-Inpaint pipeline (tiny_pipeline or from_local), on the pipe's
    device. Each job has its own generator seeded from job.seed, so an image does not depend on its batch."""

    def __init__(self, pipe, cfg: InpaintConfig):
        self.pipe, self.cfg = pipe, cfg
        pipe.set_progress_bar_config(disable=True)

    def render(self, jobs: list[RenderJob], progress: bool = False) -> list[np.ndarray]:
        import torch
        for job in jobs:
            h, w = job.mask.shape
            if h % 8 or w % 8 or job.rgb.shape[:2] != (h, w):
                raise ValueError(f"job of product {job.product_id}: image size {h}x{w} (rgb {job.rgb.shape[:2]}) "
                                 "must match the mask and be a multiple of 8 on both sides")
        cfg, out = self.cfg, [None] * len(jobs)
        for idx in tqdm(batches(jobs, cfg.batch_size), desc="inpaint", unit="batch", disable=not progress):
            batch = [jobs[i] for i in idx]
            h, w = batch[0].mask.shape
            # CPU generators: the same seed draws the same noise whatever device the pipe runs on
            generators = [torch.Generator("cpu").manual_seed(seed_int(j.seed)) for j in batch]
            with torch.inference_mode():
                result = self.pipe(
                    prompt=[j.prompt for j in batch],
                    image=[Image.fromarray(np.asarray(j.rgb, dtype=np.uint8)) for j in batch],
                    mask_image=[Image.fromarray(inpaint_mask(j.mask, cfg.dilate_px)) for j in batch],
                    control_image=[Image.fromarray(control_image(j.rgb, j.mask)) for j in batch],
                    height=h, width=w, num_inference_steps=cfg.steps, guidance_scale=cfg.guidance_scale,
                    controlnet_conditioning_scale=cfg.controlnet_conditioning_scale,
                    negative_prompt=[cfg.negative_prompt] * len(batch), generator=generators, output_type="np")
            for i, job, img in zip(idx, batch, result.images):
                out[i] = keep_product(img * 255.0, job)
        return out
