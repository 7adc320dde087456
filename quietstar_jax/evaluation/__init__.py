"""Evaluation of a Quiet-STaR model on GSM8K and CommonsenseQA, after training (python -m quietstar_jax.eval)
and during it (trainer hooks from config.eval). One concept per module:

  tasks.py        Example; the texts shown to the model (the authors' scoring format, zero-shot, CoT prompts)
  datasets.py     GSM8K / CSQA from jsonl files, tfds `gsm8k`, the offline CSQA dev set; errors name file:line
  vocab.py        the answer-token sets derived from the tokenizer; the tokenizer's default encode
  metric.py       the authors' metric (eval_helpers.py compute_metrics), batched and jitted
  generation.py   accuracy by generation: greedy zero-shot, chain-of-thought majority vote
  answers.py      reading numbers / letters out of generated text; the majority vote
  heldout.py      held-out next-token NLL with and without thinking (a run's before / after table)
  placement.py    one device or the training mesh; fixed shapes
  runner.py       Evaluator: tasks x modes (thinking on / off) x metrics; the final table
  outputs.py      per-example jsonl, summary.json, TensorBoard scalars
  progress.py     one progress line with an ETA
  train_hooks.py  PeriodicEval and HeldoutBeforeAfter, the trainer hooks

docs/algorithm.md ("Evaluation") states the metric exactly and where it differs from the authors' code.
"""
