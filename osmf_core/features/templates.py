"""The G-MLLM instruction pool of the paper's Table 5, as pure functions (no Spark, no I/O).

Four tasks, four templates each, verbatim from Table 5. In the templates `<users>` stands for the
consumer group; here it becomes the group token placeholder GROUP_TOKEN, which the model replaces by
MLP(G_{s,k}) (eq. 7). `<image>` becomes the image's patch tokens; `{}` is the product title.

jobs/build_instructions.py computes the inputs of these functions with Spark and writes their output
to feat.instructions; the responses are:
  group analysis         the most common value of each Table 4 attribute among the group's users
  behavioral prediction  the profile of one clicker of a creative, given other clickers of it in the group
  product understanding  the product title, from the product image
  prompt generation      a background prompt from a pluggable teacher (default: the prompt of the creative
                         with the best smoothed CTR in the group, in the simulator's style vocabulary)
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from osmf_core.data.catalog import USER_ATTRIBUTES
from osmf_core.models.gmllm.tokens import GROUP_TOKEN, IMAGE_TOKEN
from osmf_core.world.styles import parse_style, style_prompt

# The attribute list exactly as Table 5 writes it (the order differs from Table 4; the names do not).
TABLE5_ATTRIBUTES = (
    "member_level", "promotions_sensitive_level", "purchase_power", "gender", "marriage", "customer_points",
    "is_vip", "is_impulse_purchase_user", "per_month_order_num", "os_plant", "has_car", "has_house",
    "resident_city_level", "child_age", "profession", "user_active", "age", "target_group", "education", "color",
)
assert set(TABLE5_ATTRIBUTES) == set(USER_ATTRIBUTES) and len(TABLE5_ATTRIBUTES) == len(USER_ATTRIBUTES)
_ASPECTS = ", ".join(TABLE5_ATTRIBUTES)

TEMPLATES: dict[str, tuple[str, ...]] = {
    "group_analysis": (
        "Regarding consumer <users> on the e-commerce platform, please describe the characteristics of its "
        "most common users.",
        f"For this type of consumer <users>, please analyze its most common characteristics. You need to focus "
        f"on {_ASPECTS}.",
        f"There is a type of consumer <users>. What kind of person do you think he is? Consider these aspects, "
        f"such as {_ASPECTS}.",
        "You are an expert who specializes in studying e-commerce consumer portraits. Now there is a type of "
        "consumer whose characteristic is <users>. Please describe his portrait based on the needs of the "
        "e-commerce field.",
    ),
    "behavioral_prediction": (
        f"The item titled {{}} has been historically clicked by consumers <users>. Can you predict the "
        f"characteristics of another possible user who will click this item? You just need to pay attention "
        f"to {_ASPECTS}.",
        "After clicked by these consumers <users>, who is the next consumer that may be keen on the item "
        "titled {}? Please describe his characteristic.",
        "Considering the fact that several consumers <users> have clicked the same item {}, forecast who is the "
        "next user that will be interested in this item.",
        "You have access to the historical user interaction record <users> of the item {}. Now your task is to "
        "predict the feature of the another possible user that loves the same item based on the past "
        "interaction.",
    ),
    "product_understanding": (
        "<image> What words best capture the product presented in this image?",
        "<image> Summarize the product in this image with a caption that captures its essence.",
        "<image> Construct a succinct yet descriptive caption for the displayed product image.",
        "<image> Author a caption for the product image that summarizes its attributes.",
    ),
    "prompt_generation": (
        "Design a concise Stable Diffusion prompt that takes the product caption {} and product image as "
        "inspiration to generate an appealing advertising image background for this product. Your answer "
        "should be targeted at consumer <users>.",
        "Generate a short Stable Diffusion prompt that leverage the product caption {} and the visual elements "
        "of the product image to output an advertising background that underscores the product's "
        "attractiveness. Please consider the characteristics of consumer <users> and answer.",
        "Develop a compact prompt for Stable Diffusion to craft a background for an ad, using the product "
        "caption {} and the accompanying product image as creative influences. Consumers with characteristic "
        "<users> is your target group.",
        "Draft a distilled text to image prompt to fabricate an ad background, infusing the essence of {} from "
        "the product caption and the picture to accentuate the product's features. Please pay attention to "
        "the consumer with characteristic <users> and make the most suitable choice for him.",
    ),
    # Beyond Table 5: LLaVA's stage-1 feature alignment (an image and its caption), on the advertising
    # creatives and their background prompts. A pre-trained LLaVA already sees backgrounds; the tiny random
    # vision tower learns the style vocabulary here, which the reward model then needs.
    "creative_captioning": (
        "<image> Describe the background of this advertising image.",
        "<image> Write the background prompt this advertising image was made from.",
    ),
}
TASKS = tuple(TEMPLATES)
TABLE5_TASKS = TASKS[:4]
# Tasks whose templates speak of the product image without an <image> slot get it in front, LLaVA-style.
IMAGE_TASKS = ("product_understanding", "prompt_generation", "creative_captioning")


def template_index(task: str, product_id: int, group_id: int, example: int, seed: int) -> int:
    """A deterministic choice among the task's templates (same inputs, same template)."""
    rng = np.random.default_rng([seed, TASKS.index(task), int(product_id), int(group_id) + 1, int(example)])
    return int(rng.integers(len(TEMPLATES[task])))


def render(task: str, template: int, title: str = "", users: str = GROUP_TOKEN) -> str:
    """The instruction text: `{}` -> the title, `<users>` -> the group token (plus what `users` adds)."""
    text = TEMPLATES[task][template].replace("<users>", users).replace("<image>", IMAGE_TOKEN)
    if "{}" in text:
        text = text.replace("{}", f'"{title}"')
    if task in IMAGE_TASKS and IMAGE_TOKEN not in text:
        text = f"{IMAGE_TOKEN} {text}"
    return text


def profile_text(row) -> str:
    """A user profile in Table 5's attribute order: 'member_level: 3, promotions_sensitive_level: 1, ...'."""
    return ", ".join(f"{a}: {int(row[a])}" for a in TABLE5_ATTRIBUTES)


def most_common_profile(users: pd.DataFrame) -> dict[str, int]:
    """The most common code of every attribute among `users` (ties: the smaller code)."""
    if users.empty:
        raise ValueError("a group without users has no most common profile")
    out = {}
    for a in TABLE5_ATTRIBUTES:
        counts = users[a].value_counts()
        out[a] = int(min(counts.index[counts == counts.max()]))
    return out


def group_analysis_response(modes: dict) -> str:
    """The answer of group analysis from the most common code of every attribute (most_common_profile)."""
    return "The most common users of this group have " + profile_text(modes) + "."


def behavioral_response(clicker) -> str:
    return "A likely next clicker has " + profile_text(clicker) + "."


def behavioral_prompt_users(context: pd.DataFrame) -> str:
    """What `<users>` stands for in behavioral prediction: the group token and the known clickers."""
    return GROUP_TOKEN + " (" + "; ".join(profile_text(r) for _, r in context.iterrows()) + ")"


Teacher = Callable[[pd.DataFrame], str]


def best_ctr_teacher(candidates: pd.DataFrame, prior_strength: float = 100.0) -> str:
    """The default teacher: the background prompt of the creative with the best smoothed CTR in the group.

    `candidates` has creative_id, prompt, impressions, clicks of one (product, group). Smoothing pulls each
    CTR toward the group's pooled CTR with `prior_strength` pseudo-impressions, so a creative with 3
    impressions and 1 click does not win. Only the style words are kept (the simulator's vocabulary)."""
    if candidates.empty:
        raise ValueError("the teacher needs at least one creative")
    prior = candidates["clicks"].sum() / max(candidates["impressions"].sum(), 1)
    smoothed = (candidates["clicks"] + prior_strength * prior) / (candidates["impressions"] + prior_strength)
    order = np.lexsort((candidates["creative_id"].to_numpy(), -smoothed.to_numpy()))
    return background_words(candidates["prompt"].iloc[order[0]])


def background_words(prompt: str) -> str:
    """A creative's prompt reduced to its style words: 'the product, cozy kitchen background, ...'."""
    return style_prompt(parse_style(prompt))


