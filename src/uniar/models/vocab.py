"""The unified vocabulary: text ids (with the special tokens) followed by one id per visual code.

    [0, text_size)                      text tokenizer ids, special tokens included
    [text_size, text_size + n_visual)   visual ids: code c has id text_size + c (UGen only)

UniFluid's images are continuous, so its vocabulary has no visual ids (n_visual = 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Vocabulary:
    text_size: int
    n_visual: int
    special: dict  # name -> id, from the text tokenizer (e.g. "<boi>": 4)

    @classmethod
    def from_tokenizer(cls, tokenizer, n_visual: int) -> "Vocabulary":
        return cls(text_size=tokenizer.vocab_size, n_visual=n_visual, special=dict(tokenizer.special_ids))

    @property
    def size(self) -> int:
        return self.text_size + self.n_visual

    @property
    def visual_offset(self) -> int:
        return self.text_size

    def sid(self, name: str) -> int:
        """Id of a special token such as "<boi>"."""
        try:
            return self.special[name]
        except KeyError:
            raise KeyError(f"special token {name!r} missing from the text tokenizer; has {sorted(self.special)}")

    def visual_ids(self, codes: torch.Tensor) -> torch.Tensor:
        return codes.long() + self.text_size

    def codes(self, ids: torch.Tensor) -> torch.Tensor:
        """Visual ids back to codebook indices (ids must be visual)."""
        return ids.long() - self.text_size

    def is_visual(self, ids: torch.Tensor) -> torch.Tensor:
        return ids >= self.text_size

    def to_dict(self) -> dict:
        return {"text_size": self.text_size, "n_visual": self.n_visual, "special": self.special}
