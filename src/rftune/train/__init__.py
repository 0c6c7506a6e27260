"""Training loops: GRPO (`trainer`) and the SFT warm start (`sft`), with the log-probabilities and checkpoints they
share."""
