"""The ControlNet-Inpaint renderer on a real diffusers pipeline with tiny random components (CPU, seconds)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from osmf_core.world import images
from osmf_core.rendering.inpaint import (InpaintConfig, InpaintRenderer, control_image, from_local, inpaint_mask, seed_int,
                               tiny_pipeline)
from osmf_core.rendering.procedural import RenderJob

N = 32  # image side: a multiple of 8, latents 16x16 with the tiny VAE


@pytest.fixture(scope="module")
def renderer():
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: one thread is ~50x faster than two on a busy 2-core box
    yield InpaintRenderer(tiny_pipeline(seed=0, size=N), InpaintConfig(steps=2, batch_size=3))
    torch.set_num_threads(threads)


def cutout(category: int = 2, color: int = 3, n: int = N):
    """A product as the simulator stores it: RGB premultiplied by alpha, uint8, and its alpha mask."""
    rgb, mask = images.product_cutout(category, color, n)
    return np.rint(rgb * mask[..., None]).astype(np.uint8), mask


def job(seed, prompt="the product, cozy kitchen background, warm palette", category=2, n=N) -> RenderJob:
    rgb, mask = cutout(category, n=n)
    return RenderJob(7, rgb, mask, prompt, seed)


def test_product_pixels_are_the_products_and_background_is_painted(renderer):
    j = job(1, category=0)
    (img,) = renderer.render([j], progress=True)
    assert img.shape == (N, N, 3) and img.dtype == np.uint8
    inside = j.mask > 0
    assert np.array_equal(img[inside], j.rgb[inside])
    repainted = inpaint_mask(j.mask, renderer.cfg.dilate_px) == 255
    # the input's background is flat black (premultiplied cutout): the pipeline must have painted over it
    assert (img[repainted] != j.rgb[repainted]).any(axis=-1).mean() > 0.5
    assert img[repainted].std() > 0


def test_seeds_and_batching(renderer):
    jobs = [job(1), job(2, prompt="the product, beach background"), job((3, 4), prompt="the product, neon palette")]
    batched = renderer.render(jobs)
    alone = [renderer.render([j])[0] for j in jobs]
    assert np.array_equal(renderer.render([jobs[0]])[0], alone[0])  # same seed, same image
    assert not np.array_equal(renderer.render([job(2)])[0], alone[0])  # same prompt, another seed
    # A batch of 3 runs the same per-job generators, but float32 convolutions and matmuls over a batch of 3
    # (6 with guidance) may sum in another order than over 1: tolerance one uint8 level on < 1% of the values.
    for b, a in zip(batched, alone):
        diff = np.abs(b.astype(int) - a)
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01


def test_from_local_loads_saved_directories_offline(renderer, tmp_path):
    import torch
    pipe = renderer.pipe
    pipe.save_pretrained(tmp_path / "sd")
    pipe.controlnet.save_pretrained(tmp_path / "controlnet")
    local = from_local(str(tmp_path / "sd"), str(tmp_path / "controlnet"), device="cpu", dtype=torch.float32)
    assert type(local) is type(pipe) and type(local.scheduler).__name__ == "UniPCMultistepScheduler"
    for a, b in zip(pipe.controlnet.parameters(), local.controlnet.parameters()):
        assert torch.equal(a, b)
    j = job(1)
    (img,) = InpaintRenderer(local, renderer.cfg).render([j])
    assert np.array_equal(img[j.mask > 0], j.rgb[j.mask > 0])


def test_seed_int_hashes_tuples_deterministically():
    assert seed_int(5) == 5 and seed_int(np.int64(5)) == 5
    assert seed_int((3, 4)) == seed_int([3, 4]) != seed_int((4, 3))
    assert 0 <= seed_int((3, 4)) < 2 ** 63


def test_inpaint_mask_known_answer():
    mask = np.zeros((7, 7))
    mask[3, 3] = 0.5  # one product pixel, partial alpha still counts as product
    assert np.array_equal(inpaint_mask(mask, 0), np.where(mask > 0, 0, 255))
    # square (3x3) structure: dilation by 1 keeps a full 3x3 block, corners included (not a cross)
    expected = np.full((7, 7), 255, dtype=np.uint8)
    expected[2:5, 2:5] = 0
    out = inpaint_mask(mask, 1)
    assert out.dtype == np.uint8 and np.array_equal(out, expected)
    assert (inpaint_mask(mask, 2) == 0).sum() == 25  # 5x5
    with pytest.raises(ValueError, match="dilate_px"):
        inpaint_mask(mask, -1)


def test_control_image_edges_on_boundary_not_far_away():
    rgb, mask = cutout(category=2, n=48)  # a disc
    edges = control_image(rgb, mask)
    assert edges.shape == (48, 48, 3) and edges.dtype == np.uint8
    assert set(np.unique(edges)) <= {0, 255}
    product = mask > 0
    boundary = product & ~ndimage.binary_erosion(product)
    assert boundary.any() and (edges[boundary] == 255).all()
    far = ndimage.distance_transform_edt(~product) > 3
    assert far.any() and (edges[far] == 0).all()


def test_size_not_multiple_of_8_and_bad_config_raise(renderer):
    with pytest.raises(ValueError, match="multiple of 8"):
        renderer.render([job(1, n=30)])
    with pytest.raises(ValueError, match="steps must be >= 1"):
        InpaintConfig(steps=0)
    with pytest.raises(ValueError, match="batch_size"):
        InpaintConfig(batch_size=0)
