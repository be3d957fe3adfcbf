"""What both backends need before generation: seeds, the product's alpha, its placement on a canvas, sizes,
inpaint mask and canny map; and after it: the product laid back over each new background."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from pipeline.contract.images import to_rgb
from pipeline.contract.request import MAX_SEED, BgReplaceRequest
from pipeline.contract.result import BgReplaceResult, Intermediates
from pipeline.stages.compose import SoftEdge, composite_product, cover, generation_size, resize, soft_edge
from pipeline.stages.edges import subject_canny
from pipeline.stages.framing import (
    Placement,
    canvas_size,
    framing_info,
    place,
    place_product,
    product_bounds,
    require_product,
)
from pipeline.stages.grounding import Grounding, apply_layer, ground_layer, layer_picture
from pipeline.stages.light_match import match_light
from pipeline.stages.masking import inpaint_mask, refine_alpha, subject_alpha
from pipeline.stages.photo_shadow import PhotoShading, photo_shading, photo_to_output, place_shading
from pipeline.stages.quality import THRESHOLD_FIELDS, check_quality, mask_uncertainty


@dataclass(frozen=True)
class PreparedInputs:
    """Everything the generator needs that depends only on the images and masking options.

    ``product_pixels`` and ``alpha_pixels`` are the output-size images as arrays, made once: every
    sample's compositing reads them, and converting a 24 MP image to an array costs ~0.2 s each time.
    The output size is the photo's own, or the canvas's where the request places the product on one
    (``placement`` says where; README, "Framing").
    """

    product: Image.Image  # RGB, input or canvas size (transparency flattened onto white)
    alpha: Image.Image  # L, input or canvas size, after grow/feather
    mask_source: str
    size: tuple[int, int]  # generation (width, height)
    image: Image.Image  # RGB, generation size
    alpha_small: Image.Image  # L, generation size
    inpaint_mask: Image.Image  # L, generation size
    canny: Image.Image  # RGB, generation size
    edge: SoftEdge  # the product's soft edge at the output's size, shared by every sample's compositing
    product_pixels: np.ndarray = field(repr=False, compare=False)
    alpha_pixels: np.ndarray = field(repr=False, compare=False)
    shading: PhotoShading | None = field(default=None, repr=False, compare=False)  # shadow "original" only
    seconds: dict[str, float] = field(default_factory=dict, compare=False)  # time per preparation step
    mask_uncertainty: float = 0.0  # of the mask as found, before grow/feather (quality.mask_uncertainty)
    placement: Placement | None = None  # the product's place on the canvas; None: the photo's own framing


def resolve_seeds(seed: int, samples: int) -> list[int]:
    """-1 draws a random seed; sample i uses seed + i, so each image can be remade on its own."""
    if seed == -1:
        seed = secrets.randbelow(MAX_SEED + 1)
    return [(seed + i) % (MAX_SEED + 1) for i in range(samples)]


def prepare_inputs(request: BgReplaceRequest, native_resolution: int) -> PreparedInputs:
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[step], clock = now - clock, now

    product = to_rgb(request.image)
    raw_alpha, source = subject_alpha(request.image, mask_model=request.mask_model, user_mask=request.mask)
    lap("mask")
    require_product(raw_alpha, source)
    alpha = refine_alpha(raw_alpha, grow=request.mask_grow, feather=request.mask_feather)
    uncertainty = mask_uncertainty(raw_alpha)
    product_pixels, alpha_pixels = np.asarray(product), np.asarray(alpha)
    # Before any generation: a photo without a plain backdrop is refused now, not after the GPU's work. Found
    # on the photo as taken (its backdrop is still there), and carried with the product wherever it is placed.
    shading = photo_shading(product_pixels, alpha_pixels) if request.shadow == "original" else None
    side = request.resolution or native_resolution
    canvas = canvas_size(request.canvas)
    placement = None
    if canvas is None:
        size = generation_size(*product.size, side=side)
        image_small, alpha_small = resize(product_pixels, size), resize(alpha_pixels, size)
    else:
        placement = place(product.size, product_bounds(alpha_pixels), canvas, request.padding, request.placement)
        size = generation_size(*canvas, side=side)
        # Both sizes straight from the photo: the product is resampled once for whichever the output is.
        small_pixels, small_alpha_pixels = place_product(product_pixels, alpha_pixels, placement.scaled_to(size))
        image_small, alpha_small = Image.fromarray(small_pixels), Image.fromarray(small_alpha_pixels, mode="L")
        product_pixels, alpha_pixels = place_product(product_pixels, alpha_pixels, placement)
        product, alpha = Image.fromarray(product_pixels), Image.fromarray(alpha_pixels, mode="L")
    halo = max(1, round(max(size) / 256))  # ~4 px at 1024: covers the soft edge at generation scale
    mask = inpaint_mask(alpha_small, halo=halo)
    lap("refine_and_resize")
    canny = subject_canny(image_small, alpha_small, low=request.canny_low, high=request.canny_high)
    lap("canny")
    at_generation_size = request.output_size == "generation"
    edge = soft_edge(np.asarray(image_small), np.asarray(alpha_small)) if at_generation_size \
        else soft_edge(product_pixels, alpha_pixels)
    lap("soft_edge")
    return PreparedInputs(product=product, alpha=alpha, mask_source=source, size=size, image=image_small,
                          alpha_small=alpha_small, inpaint_mask=mask, canny=canny, edge=edge,
                          product_pixels=product_pixels, alpha_pixels=alpha_pixels, shading=shading,
                          seconds=seconds, mask_uncertainty=uncertainty,
                          placement=placement)


def starting_image(prepared: PreparedInputs, ref_image: Image.Image) -> Image.Image:
    """The image local generation starts from: the product as it is, its old backdrop flattened to the
    reference picture's mean colour.

    Below strength 1 the pipeline starts from this image noised part of the way, so its colours and layout
    carry into the result; even at 1 (run as 0.9999, see diffusion.py) a trace of it does. The photo's own
    backdrop would carry the very scene being replaced: a studio sweep's gradient, a table edge, a shadow.
    A flat field carries no layout, so the scene's layout comes from the prompt, the reference and the edges;
    its colour is the reference's rather than a neutral grey, so a lower strength leans towards the scene
    the user asked for instead of towards grey."""
    alpha = np.asarray(prepared.alpha_small, dtype=np.float32)[..., None] / 255
    small_ref = to_rgb(ref_image).resize((32, 32), Image.Resampling.BOX)  # its mean is the whole picture's
    colour = np.asarray(small_ref, dtype=np.float32).reshape(-1, 3).mean(axis=0)
    pixels = np.asarray(prepared.image, dtype=np.float32) * alpha + colour * (1 - alpha)
    return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8))


@dataclass(frozen=True)
class Composed:
    """One finished image, with its grounding layer (over white, for the studio's intermediates; None when
    the request asks for none) and how much light match changed the product (None when it was not asked)."""

    image: Image.Image
    layer: Image.Image | None = None
    product_change: float | None = None


def compose_output(request: BgReplaceRequest, prepared: PreparedInputs, background: Image.Image) -> Image.Image:
    return compose_grounded(request, prepared, background).image


def compose_grounded(request: BgReplaceRequest, prepared: PreparedInputs, background: Image.Image) -> Composed:
    """The product laid over ``background``: first its shadow and reflection are layered onto the background
    (never onto the product) and, only when asked, its light matched to the scene's.

    Without any of these (the defaults) this is exactly the plain compositing, byte for byte."""
    product, alpha = _output_product(request, prepared)
    grounding = Grounding.from_request(request)
    if not grounding.layers_background and grounding.light_match == 0:
        return Composed(composite_product(product, alpha, background, prepared.edge))
    canvas = np.array(cover(background.convert("RGB"), alpha.shape[1::-1]))  # writable, output size
    edge, change = prepared.edge, None
    if grounding.light_match > 0:  # measured on the scene as generated, before any shadow darkens it
        matched = match_light(product, alpha, edge, canvas, grounding.light_match)
        product, edge, change = matched.product, matched.edge, matched.change
    layer = ground_layer(alpha, grounding, shading=_placed_shading(prepared, alpha.shape[1::-1]))
    apply_layer(canvas, product, alpha, layer)
    picture = Image.fromarray(layer_picture(product, layer)) if grounding.layers_background else None
    return Composed(composite_product(product, alpha, Image.fromarray(canvas), edge), picture, change)


def _output_product(request: BgReplaceRequest, prepared: PreparedInputs) -> tuple[np.ndarray, np.ndarray]:
    """The product's pixels and alpha as placed on the output. Framing (a product placed on a new canvas)
    replaces these with the placed product; the shadow and reflection follow the alpha they are given."""
    if request.output_size == "generation":
        return np.asarray(prepared.image), np.asarray(prepared.alpha_small)
    return prepared.product_pixels, prepared.alpha_pixels


def _placed_shading(prepared: PreparedInputs, output_size: tuple[int, int]) -> np.ndarray | None:
    """The photo's own shadow (``original``) on the output. The transform is the product's own placement:
    today a scale from the photo to the output; framing passes the map that places the product instead."""
    if prepared.shading is None:
        return None
    if prepared.placement is None:
        return place_shading(prepared.shading, photo_to_output(prepared.product.size, output_size), output_size)
    return place_shading(prepared.shading, prepared.placement.photo_to_output(output_size), output_size)


def finish_result(request: BgReplaceRequest, prepared: PreparedInputs, backgrounds: list[Image.Image],
                  seeds: list[int], *, timings: dict[str, float], started: float, backend: str,
                  info: dict[str, Any]) -> BgReplaceResult:
    """Lay the product over each new background and assemble the result, the same for every backend.
    ``info`` adds to (or corrects) the sizes and mask source recorded here."""
    stage_start = time.perf_counter()
    composed = [compose_grounded(request, prepared, background) for background in backgrounds]
    images = tuple(part.image for part in composed)
    timings["compose"] = time.perf_counter() - stage_start
    stage_start = time.perf_counter()
    quality = [check_image_quality(request, prepared, part.image, part.product_change) for part in composed]
    timings["quality"] = time.perf_counter() - stage_start
    timings["total"] = time.perf_counter() - started
    recorded = {"generation_size": list(prepared.size), "output_size": list(images[0].size),
                "mask_source": prepared.mask_source}
    if request.light_match > 0:  # the product's own pixels were changed: say by how much, image by image
        recorded["product_change"] = [part.product_change for part in composed]
    if prepared.placement is not None:
        recorded |= framing_info(prepared.placement, images[0].size)
    return BgReplaceResult(
        images=images, seeds=tuple(seeds), request=request, timings=timings, backend=backend,
        info=recorded | info | {"quality": quality},
        intermediates=Intermediates(subject_alpha=prepared.alpha, inpaint_mask=prepared.inpaint_mask,
                                    canny=prepared.canny, backgrounds=tuple(backgrounds),
                                    grounding=tuple(part.layer for part in composed if part.layer is not None)),
    )


def check_image_quality(request: BgReplaceRequest, prepared: PreparedInputs, image: Image.Image,
                        levels_changed: float | None) -> dict[str, Any]:
    """The quality check (stages/quality.py) of one image. The product is compared where it was laid: the
    input-size alpha, or the generation-size one for ``output_size: generation``. ``upscale`` is the product's
    enlargement from the photo's pixels: its placement's scale on a canvas (``prepared.product`` is then the
    canvas), times the output's size over that of ``prepared.product``. ``product_change`` is light match's mean
    change over the product (``levels_changed``, in 8-bit levels, as ``info["product_change"]`` says it) as a
    share of the full range, 0 to 1 like its threshold; 0 when light match did not run."""
    placed = prepared.alpha_small if request.output_size == "generation" else prepared.alpha
    placed_scale = prepared.placement.scale if prepared.placement is not None else 1.0
    upscale = placed_scale * image.width / prepared.product.width
    change = (levels_changed or 0.0) / 255
    thresholds = {name: getattr(request, name) for name in THRESHOLD_FIELDS.values()}
    return check_quality(image, placed, mask_model=request.mask_model, thresholds=thresholds,
                         uncertainty=prepared.mask_uncertainty, upscale=upscale, product_change=change)
