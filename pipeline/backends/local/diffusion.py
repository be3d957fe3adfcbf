"""The diffusers pipeline Backdrop runs, with three changes. Imported only when models load (it pulls in torch)."""

from __future__ import annotations

import torch
from diffusers import StableDiffusionXLControlNetInpaintPipeline
from diffusers.pipelines.controlnet.pipeline_controlnet_inpaint_sd_xl import retrieve_latents

# SDXL inpainting gives noisier, less sharp results from pure noise (strength exactly 1) than from the start
# image noised to the first step's level, which is why diffusers defaults its SDXL inpaint pipeline to 0.9999
# (the model card; diffusers PR 4858, issue 8450). Backdrop keeps the API's strength 1 and runs at this instead.
RUN_STRENGTH_CAP = 0.9999


def run_strength(strength: float) -> float:
    """The strength the pipeline runs at for the request's ``strength``."""
    return min(strength, RUN_STRENGTH_CAP)


class BackdropInpaintPipeline(StableDiffusionXLControlNetInpaintPipeline):
    """SDXL ControlNet inpainting, changed in four ways.

    1. VAE encodes take the posterior's mean instead of a random draw. Upstream draws the encode noise for
       the (single) product image from the *first* sample's generator, so sample 2 of a batch differs from
       a run of its seed alone. The mean draws nothing: each sample's noise then comes from its own seed
       only, and any image of a batch can be remade by itself.
    2. With model offload, the IP-Adapter's image encoder (ViT-bigG, 3.7 GB in fp16) takes its turn on the
       GPU like the text encoders, instead of staying there through the whole denoising loop.
    3. A 4-channel (non-inpainting) UNet never reads the masked product's latents: that VAE encode is skipped.
    4. ``RUN_STRENGTH_CAP`` runs every requested step. Upstream runs ``int(steps * strength)`` steps, so 0.9999
       would drop the first (diffusers' SDXL inpaint pipeline rounds the other way and keeps it).
    """

    model_cpu_offload_seq = "text_encoder->text_encoder_2->image_encoder->unet->vae"

    def get_timesteps(self, num_inference_steps, strength, device, denoising_start=None):  # type: ignore
        if strength >= RUN_STRENGTH_CAP:
            strength = 1.0  # every step; the start latents still come from the image (``strength == 1`` is False)
        return super().get_timesteps(num_inference_steps, strength, device, denoising_start)

    def prepare_mask_latents(self, mask, masked_image, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.unet.config.in_channels == 4:
            masked_image = None  # only 9-channel inpainting UNets take it as input
        return super().prepare_mask_latents(mask, masked_image, *args, **kwargs)

    def _encode_vae_image(self, image: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        dtype = image.dtype
        if self.vae.config.force_upcast:  # the stock SDXL VAE overflows in fp16
            image = image.float()
            self.vae.to(dtype=torch.float32)
        latents = retrieve_latents(self.vae.encode(image), sample_mode="argmax")
        if self.vae.config.force_upcast:
            self.vae.to(dtype)
        return self.vae.config.scaling_factor * latents.to(dtype)
