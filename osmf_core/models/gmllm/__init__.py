"""The group-aware multimodal LLM (G-MLLM) and its reward model (GRM).

  tokens     the group and image placeholders, the tiny profile's tokenizer
  model      GroupLlava (LLaVA + the group token MLP), input encoding
  builders   the tiny, small (SmolLM2 + MobileNetV2) and local (a LLaVA checkpoint) profiles
  grm        the reward model and its scoring of candidate images
  policy     loading a policy with its LoRA adapters, sampling and greedy prompts
"""
