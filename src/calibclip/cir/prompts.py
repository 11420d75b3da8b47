"""Named composed-query protocols (``--prompt-preset``): each paper's prompt and its FashionIQ rule, as data.

calibclip writes the pseudo word as ``$`` (the placeholder token ``$</w>``). A preset keeps the
template as its paper writes it plus the character it uses for the pseudo word; ``prompt`` is that
template in calibclip's ``$`` form. Swapping the character changes only the id of the slot whose
embedding is replaced by φ's token, so the encoded query is the same (both are one-character
punctuation tokens surrounded by spaces).

FashionIQ queries (``fashioniq``):

- ``both`` (SEARLE, LinCIR, RTD ``fiq_generate_val_predictions``): captions c1, c2 lose ``.?,`` and
  spaces at both ends; the query is normalize(normalize(q("c1 and c2")) + normalize(q("c2 and c1"))).
- ``second-first`` (Pic2Word ``FashionIQ.return_all``): one query, "c2 and c1", captions raw.

Sources (read at the commits listed in docs/methods/zs-cir.md): RTD ``validate.py`` (its Pic2Word
rows use the same "a photo of $ that {}" prompt), SEARLE ``src/validate.py``, LinCIR ``validate.py``,
Pic2Word ``src/data.py`` ('a photo of * , {}').
"""

from __future__ import annotations

from dataclasses import dataclass

from calibclip.cir.compose import check_prompt
from calibclip.errors import UserError

FIQ_MODES = ("both", "second-first")


@dataclass(frozen=True)
class PromptPreset:
    """One paper's composed-query protocol."""

    name: str
    template: str  # as the paper writes it
    placeholder: str  # the pseudo word's character in ``template``
    fashioniq: str  # one of FIQ_MODES
    source: str

    @property
    def prompt(self) -> str:
        """The template with calibclip's placeholder ``$``."""
        return self.template.replace(self.placeholder, "$", 1)


PRESETS: dict[str, PromptPreset] = {p.name: p for p in (
    PromptPreset("rtd", "a photo of $ that {}", "$", "both",
                 "RTD (ICCV 2025) validate.py; also the prompt of RTD's Pic2Word rows"),
    PromptPreset("searle", "a photo of $ that {}", "$", "both", "SEARLE (ICCV 2023) src/validate.py"),
    PromptPreset("lincir", "a photo of $ that {}", "$", "both", "LinCIR (CVPR 2024) validate.py"),
    PromptPreset("pic2word", "a photo of * , {}", "*", "second-first",
                 "Pic2Word (CVPR 2023) src/data.py: CIRR 'a photo of * , {}', "
                 "FashionIQ 'a photo of * , {c2} and {c1}'"),
)}
DEFAULT_PRESET = "rtd"


@dataclass(frozen=True)
class PromptProtocol:
    """What a composed evaluation or search uses: the ``$`` prompt, its preset (None: free text), FashionIQ mode."""

    prompt: str
    preset: str | None
    fashioniq: str = "both"

    def settings(self) -> dict[str, str | None]:
        """The fields recorded in a result JSON."""
        template = PRESETS[self.preset].template if self.preset else self.prompt
        return {"prompt": self.prompt, "prompt_preset": self.preset, "prompt_as_published": template,
                "fashioniq_queries": self.fashioniq}


def resolve_prompt(prompt: str | None = None, preset: str | None = None) -> PromptProtocol:
    """``--prompt TEXT`` or ``--prompt-preset NAME`` (not both); neither → the ``rtd`` preset."""
    if prompt is not None and preset is not None:
        raise UserError("--prompt and --prompt-preset: give one of them (a preset fixes the prompt).")
    if prompt is not None:
        return PromptProtocol(check_prompt(prompt), None)
    name = (preset or DEFAULT_PRESET).strip().lower()
    if name not in PRESETS:
        raise UserError(f"--prompt-preset {preset}: unknown; use one of {', '.join(PRESETS)}.")
    p = PRESETS[name]
    return PromptProtocol(p.prompt, p.name, p.fashioniq)


def presets_help() -> str:
    """One line per preset for --help."""
    return "; ".join(f"{p.name}: '{p.template}'" for p in PRESETS.values())

