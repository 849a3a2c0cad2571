"""The placeholders that instructions carry and the G-MLLM replaces: e_G and the image patches. A module of
its own, free of Spark, so that the model and its input encoding import on a GPU node without the data stack."""
GROUP_TOKEN = "<group>"
IMAGE_TOKEN = "<image>"
