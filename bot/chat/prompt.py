"""Building a prompt from a conversation's turns within the model's token budget."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from bot.models.prompt_formats import PromptFormat, Turn


@dataclass(frozen=True)
class BuiltPrompt:
    text: str
    token_ids: list[int]
    turns_used: int


def build_prompt(
    fmt: PromptFormat,
    turns: Sequence[Turn],
    *,
    encode: Callable[[str], list[int]],
    budget: int,
    preamble: str = "",
    special_tokens: Collection[str] = (),
) -> BuiltPrompt | None:
    """Fit as many of the most recent turns as the token budget allows, never cutting one.

    Returns None when not even the newest turn fits. Each turn is counted on its own first (cheap
    and close), then the joined prompt is counted exactly and older turns dropped until it fits.
    `special_tokens`: the tokenizer's declared tokens, which no text may spell.
    """
    if not turns:
        return None
    fixed = len(encode(fmt.render([], preamble, special_tokens)))
    used, count = fixed, 0
    for turn in reversed(turns):
        cost = len(encode(fmt.render_turns([turn], special_tokens)[0])) + 1
        if used + cost > budget:
            break
        used, count = used + cost, count + 1
    count = max(count, 1)
    while count >= 1:
        window = turns[len(turns) - count :]
        text = fmt.render(window, preamble, special_tokens)
        ids = encode(text)
        if len(ids) <= budget:
            return BuiltPrompt(text, ids, count)
        count -= 1
    return None
