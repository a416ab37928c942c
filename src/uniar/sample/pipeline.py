"""Task-level sampling for a trained model: draw, caption, answer, edit, continue text or documents.

    pipe = Pipeline.from_checkpoint("runs/ugen-tiny/checkpoints/final")
    images = pipe.t2i(["a large red circle at the top left"], SamplingConfig(cfg_scale=2.0))
    captions = pipe.caption(images)

Every prompt is built by the same SequenceBuilder that built the training data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from uniar.data.images import to_model, to_numpy_hwc, to_uint8
from uniar.data.sequence import ImageData
from uniar.errors import UserError
from uniar.sample.decode import Decoder, SamplingConfig


class Pipeline:
    def __init__(self, model, text_tok, image_tok, builder, cfg=None, progressive=None):
        self.model = model.eval()
        self.text_tok = text_tok
        self.image_tok = image_tok.eval()
        self.builder = builder
        self.cfg = cfg  # the TrainConfig the model was trained with (for reports)
        bias = None
        if progressive is not None:
            bias = progressive.logit_bias(model.vocab.size, model.vocab.visual_offset)
        # tokens per generated image: a continuous model may group the tokenizer's tokens
        self.decoder = Decoder(model, getattr(model, "gen_len", image_tok.num_tokens), logit_bias=bias)

    @classmethod
    def from_checkpoint(cls, folder: str | Path, device: str = "cpu") -> "Pipeline":
        from uniar.train.inference import load_for_inference

        return cls(*load_for_inference(folder, device))

    @property
    def image_size(self) -> int:
        return self.image_tok.image_size

    # ---- images in and out ---------------------------------------------------------------------

    def encode_image(self, image_uint8: np.ndarray) -> ImageData:
        img = np.asarray(image_uint8)
        if img.ndim != 3 or img.shape[-1] != 3 or img.dtype != np.uint8:
            raise UserError(f"expected an (H, W, 3) uint8 image, got {img.shape} {img.dtype}")
        if img.shape[0] != self.image_size or img.shape[1] != self.image_size:
            raise UserError(f"image is {img.shape[1]}x{img.shape[0]}; this model reads "
                            f"{self.image_size}x{self.image_size} images (resize it first)")
        pixels = to_model(img[None])
        with torch.no_grad():
            tokens = self.image_tok.encode(pixels)[0]
        # pixels too: a continuous model's understanding encoder may read them
        if tokens.is_floating_point():
            return ImageData(latents=tokens, pixels=pixels[0])
        return ImageData(codes=tokens.cpu().numpy(), pixels=pixels[0])

    def decode_codes(self, codes: list[list[int]]) -> np.ndarray:
        ids = torch.tensor(codes, dtype=torch.long)
        with torch.no_grad():
            images = self.image_tok.decode(ids)
        return to_numpy_hwc(to_uint8(images))

    def decode_latents(self, latents: list[torch.Tensor]) -> np.ndarray:
        """A continuous model's tokens (N, D) per image, raster order -> uint8 (len, S, S, 3)."""
        tokens = torch.stack([torch.as_tensor(z).float() for z in latents])
        with torch.no_grad():
            images = self.image_tok.decode(self.model.ungroup_tokens(tokens))
        return to_numpy_hwc(to_uint8(images))

    def _generated_images(self, res) -> np.ndarray:
        """The image each row of an image-mode decoder result drew, as uint8 (B, S, S, 3)."""
        if "images" in res:  # continuous tokens
            return self.decode_latents([row[0] for row in res["images"]])
        return self.decode_codes([self._image_codes(t) for t in res["tokens"]])

    def _image_codes(self, tokens: list[int]) -> list[int]:
        off, n = self.model.vocab.visual_offset, self.image_tok.num_tokens
        codes = [t - off for t in tokens if t >= off][:n]
        if len(codes) != n:
            raise RuntimeError(f"decoder returned {len(codes)} visual ids, expected {n}")
        return codes

    # ---- tasks -----------------------------------------------------------------------------------

    def t2i(self, prompts: list[str], sampling: SamplingConfig | None = None, batch_size: int = 64) -> np.ndarray:
        """Text-to-image: uint8 (N, S, S, 3)."""
        sampling = sampling or SamplingConfig()
        out = []
        for i in range(0, len(prompts), batch_size):
            chunk = prompts[i:i + batch_size]
            conds = [self.builder.t2i(p) for p in chunk]
            unconds = [self.builder.t2i(None) for _ in chunk] if sampling.cfg_scale != 1.0 else None
            res = self._run(conds, "image", sampling, unconds, offset=i)
            out.append(self._generated_images(res))
        return np.concatenate(out)

    def edit(self, images: np.ndarray, instructions: list[str], sampling: SamplingConfig | None = None,
             batch_size: int = 64) -> np.ndarray:
        sampling = sampling or SamplingConfig()
        out = []
        for i in range(0, len(images), batch_size):
            srcs = [self.encode_image(im) for im in images[i:i + batch_size]]
            instr = instructions[i:i + batch_size]
            conds = [self.builder.edit(s, t) for s, t in zip(srcs, instr)]
            unconds = [self.builder.edit(s, None) for s in srcs] if sampling.cfg_scale != 1.0 else None
            res = self._run(conds, "image", sampling, unconds, offset=i)
            out.append(self._generated_images(res))
        return np.concatenate(out)

    def caption(self, images: np.ndarray, sampling: SamplingConfig | None = None, batch_size: int = 64) -> list[str]:
        sampling = sampling or SamplingConfig()
        out: list[str] = []
        for i in range(0, len(images), batch_size):
            prompts = [self.builder.caption(self.encode_image(im)) for im in images[i:i + batch_size]]
            out += self._texts(self._run(prompts, "text", sampling, offset=i))
        return out

    def vqa(self, images: np.ndarray, questions: list[str], sampling: SamplingConfig | None = None,
            batch_size: int = 64) -> list[str]:
        sampling = sampling or SamplingConfig()
        out: list[str] = []
        for i in range(0, len(images), batch_size):
            prompts = [self.builder.vqa(self.encode_image(im), q)
                       for im, q in zip(images[i:i + batch_size], questions[i:i + batch_size])]
            out += self._texts(self._run(prompts, "text", sampling, offset=i))
        return out

    def text(self, prompts: list[str], sampling: SamplingConfig | None = None) -> list[str]:
        sampling = sampling or SamplingConfig()
        seqs = [self.builder.text(prompt=p) for p in prompts]
        return self._texts(self._run(seqs, "text", sampling))

    def interleaved(self, prompts: list[str], sampling: SamplingConfig | None = None) -> list[list]:
        """Continue documents; each result is a list of parts: str, or uint8 (S,S,3) image."""
        sampling = sampling or SamplingConfig()
        seqs = [self.builder.interleaved([p], prompt=True) for p in prompts]
        res = self._run(seqs, "interleaved", sampling)
        latents = res.get("images", [None] * len(seqs))
        return [self._split_parts(t, z) for t, z in zip(res["tokens"], latents)]

    # ---- helpers ---------------------------------------------------------------------------------

    def _run(self, prompts, mode, sampling, uncond=None, offset: int = 0):
        # a different seed per chunk, so chunks of a long list do not repeat each other
        # continuous images are drawn in the order the model was trained with unless told otherwise
        order = sampling.image_order or (self.cfg.data.order if self.cfg is not None else "raster")
        s = SamplingConfig(**{**sampling.describe(), "seed": sampling.seed + offset, "image_order": order})
        return self.decoder.run(prompts, mode, s, uncond=uncond, pad_id=self.text_tok.pad_id)

    def _texts(self, res) -> list[str]:
        eos = self.text_tok.eos_id
        out = []
        for toks in res["tokens"]:
            toks = toks[: toks.index(eos)] if eos in toks else toks
            out.append(self.text_tok.decode(toks).strip())
        return out

    def _split_parts(self, tokens: list[int], latents: list | None = None) -> list:
        """Generated tokens -> text and image parts; `latents`: a continuous model's images, in order."""
        latents = list(latents or [])
        v = self.model.vocab
        boi, eoi, eos = v.sid("<boi>"), v.sid("<eoi>"), v.sid("<eos>")
        parts, text, image, in_image = [], [], [], False
        for t in tokens:
            if t == eos:
                break
            if t == boi:
                if text:
                    parts.append(self.text_tok.decode(text).strip())
                text, image, in_image = [], [], True
            elif t == eoi and in_image:
                if self.decoder.continuous:
                    parts.append(self.decode_latents([latents.pop(0)])[0])
                else:
                    parts.append(self.decode_codes([[c - v.visual_offset for c in image]])[0])
                in_image = False
            elif in_image:
                image.append(t)
            else:
                text.append(t)
        if text:
            parts.append(self.text_tok.decode(text).strip())
        return parts
